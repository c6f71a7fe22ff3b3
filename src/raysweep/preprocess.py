"""Turn raw feature columns (numbers, strings, categories, gaps) into the numeric matrix a model trains on.

:func:`build` returns an *unfitted* scikit-learn transformer. Each model puts it first in its own sklearn
``Pipeline`` and fits it on the training split only, so imputation and encoding learn nothing from validation or
test rows, and the logged model takes the raw columns a user serves it. It is built from scikit-learn classes
alone (no raysweep code inside), so a logged model loads where raysweep is not installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.compose import ColumnTransformer


#: Modules of estimators whose numbers are not standardised: trees split on the order of a feature's values, and
#: naive Bayes models each feature on its own (multinomial and complement NB need the counts as they are, never
#: negative). Every other estimator's are (distances, margins, penalties and gradient steps depend on each
#: feature's scale: an SVM or k-NN on an income in tens of thousands beside an age sees only the income).
_UNSCALED_MODULES = ("sklearn.tree", "sklearn.ensemble._forest", "sklearn.ensemble._gb",
                     "sklearn.ensemble._hist_gradient_boosting", "sklearn.ensemble._iforest", "sklearn.naive_bayes",
                     "xgboost", "lightgbm", "catboost")


#: A categorical column becomes at most this many one-hot columns: its most frequent values one each, all others
#: one together. The matrix is dense, so a column of tens of thousands of codes (zip codes, ticket numbers) would
#: otherwise take gigabytes per trial, for values seen too rarely to learn from.
MAX_CATEGORIES = 100


def needs_scaling(estimator) -> bool:
    """Whether :func:`build` should standardise numeric columns for ``estimator`` (its ``scale``): for all but
    tree and naive Bayes models (:data:`_UNSCALED_MODULES`)."""
    module = type(estimator).__module__
    return not any(module == name or module.startswith(f"{name}.") for name in _UNSCALED_MODULES)


def column_kinds(X: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Split the columns into numeric ones and categorical ones, in the frame's order.

    Numbers and booleans are numeric; strings, categoricals and other objects (booleans with gaps read from a
    CSV, mixed values) are categorical.

    Args:
        X: The raw feature columns.

    Returns:
        ``(numeric, categorical)`` column names.
    """
    import pandas as pd

    numeric, categorical = [], []
    for column in X.columns:
        dtype = X[column].dtype
        is_number = pd.api.types.is_numeric_dtype(dtype) and not isinstance(dtype, pd.CategoricalDtype)
        (numeric if is_number else categorical).append(column)
    return numeric, categorical


def build(X_train: pd.DataFrame, *, add_indicator: bool = True, scale: bool = False) -> ColumnTransformer:
    """An unfitted transformer from raw feature columns to a dense float64 matrix.

    Numeric columns: missing values become the training median (with a 0/1 "was missing" column for each column
    that had gaps in training, when ``add_indicator``), optionally standardised. Categorical columns: missing
    values become the most frequent training value, then one-hot encoded, at most :data:`MAX_CATEGORIES` columns
    a column (the rarer values share the last); a category training never saw goes with the rare ones, or encodes
    as all zeros where there are none, instead of failing, so a served model answers rows with new values.

    A column with no value at all in training is left out (as every value a model is later served in it): there
    is nothing to learn or impute it from, and scikit-learn's imputer would warn at every fit and prediction.

    Args:
        X_train: The training split's raw feature columns (their names, dtypes and which hold any value are read).
        add_indicator: Add missing-value indicator columns for numeric columns with gaps in training.
        scale: Standardise numeric columns (for models that need it, e.g. neural networks).

    Returns:
        A ``ColumnTransformer`` to fit on the training split; its output is a dense float64 numpy array.
    """
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    empty = set(X_train.columns[X_train.isna().all().to_numpy()]) if len(X_train) else set()
    numeric, categorical = ([c for c in kind if c not in empty] for kind in column_kinds(X_train))
    transformers = []
    if numeric:
        steps = [("impute", SimpleImputer(strategy="median", add_indicator=add_indicator))]
        if scale:
            steps.append(("scale", StandardScaler()))
        transformers.append(("numeric", Pipeline(steps), numeric))
    if categorical:
        categories = Pipeline([
            # Strings and categoricals arrive with None, NaN or pd.NA as the gap; the imputer sees them as NaN.
            ("impute", SimpleImputer(strategy="most_frequent", missing_values=np.nan)),
            # A value training never saw goes with the rare ones where there are any, else encodes as all zeros.
            ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=MAX_CATEGORIES,
                                     sparse_output=False, dtype=np.float64)),
        ])
        transformers.append(("categorical", categories, categorical))
    # remainder="drop": every column is named above; sparse_threshold=0 keeps the output dense.
    return ColumnTransformer(transformers, remainder="drop", sparse_threshold=0.0)
