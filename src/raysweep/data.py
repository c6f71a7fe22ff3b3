"""Training data: a deterministic card-transaction fraud generator, or a user's CSV/Parquet file.

Both end as a :class:`Dataset` of numeric feature columns and a 0/1 target, split once (stratified,
seeded) on the driver and shipped to every trial through Ray's object store.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from raysweep.errors import RaySweepError

if TYPE_CHECKING:
    import pandas as pd

# Scales the label model so a good forest reaches ROC AUC ~0.95 and average precision ~0.4: hard enough
# that hyperparameters matter, learnable enough to look like a real fraud table.
_SIGNAL = 2.0


@dataclass(frozen=True)
class Dataset:
    """A stratified train/validation split of numeric features and a 0/1 target."""

    X_train: pd.DataFrame
    y_train: np.ndarray
    X_val: pd.DataFrame
    y_val: np.ndarray
    task: str = "binary"  # binary | multiclass | regression

    @property
    def feature_names(self) -> list[str]:
        """The feature columns, in the order models see them."""
        return list(self.X_train.columns)

    @property
    def fraud_rate(self) -> float:
        """Share of positive rows over both splits."""
        n = len(self.y_train) + len(self.y_val)
        return float((self.y_train.sum() + self.y_val.sum()) / n)


def generate_fraud(n_samples: int, fraud_rate: float, n_noise_features: int, seed: int) -> pd.DataFrame:
    """Generate card transactions with a rare, learnable fraud label.

    Features are drawn like real transaction logs (log-normal amounts, a daily cycle, merchant risk,
    distances, velocity counts); the label comes from a logistic model of those features whose intercept is
    solved so the expected fraud share equals ``fraud_rate``. Noise columns carry no signal.

    Args:
        n_samples: Number of transactions.
        fraud_rate: Expected share of fraudulent rows, e.g. 0.015.
        n_noise_features: Number of extra standard-normal columns with no signal.
        seed: Seed; the same arguments always give the same frame.

    Returns:
        A DataFrame with the feature columns and an ``is_fraud`` column of 0/1.
    """
    import pandas as pd

    rng = np.random.default_rng(seed)
    n = n_samples
    customer_avg = rng.lognormal(3.6, 0.6, n)
    amount = np.round(customer_avg * rng.lognormal(0.0, 0.7, n), 2)
    # Spending follows a daily cycle peaking in the afternoon.
    hour = np.mod(np.round(rng.normal(14.0, 4.5, n)), 24).astype(int)
    is_night = ((hour < 6) | (hour >= 23)).astype(int)
    merchant_risk = rng.beta(2.0, 9.0, n)
    distance = rng.lognormal(1.8, 1.1, n)
    minutes_since_last = rng.exponential(600.0, n)
    txn_count_24h = rng.poisson(3.0, n)
    card_present = rng.binomial(1, 0.7, n)
    foreign = rng.binomial(1, 0.06, n)
    account_age_days = rng.integers(1, 3650, n)
    log_ratio = np.log(amount / customer_avg)

    logit = (
        1.1 * log_ratio
        + 1.2 * is_night
        + 5.0 * merchant_risk
        + 0.45 * np.log1p(distance)
        - 0.35 * np.log1p(minutes_since_last)
        + 0.18 * txn_count_24h
        - 1.3 * card_present
        + 1.4 * foreign
        - 0.25 * np.log1p(account_age_days)
    )
    logit = _SIGNAL * logit
    intercept = _solve_intercept(logit, fraud_rate)
    is_fraud = rng.binomial(1, 1.0 / (1.0 + np.exp(-(logit + intercept))))

    frame = pd.DataFrame(
        {
            "amount": amount,
            "log_amount_to_avg": log_ratio,
            "hour": hour,
            "is_night": is_night,
            "merchant_risk": merchant_risk,
            "distance_from_home_km": distance,
            "minutes_since_last_txn": minutes_since_last,
            "txn_count_24h": txn_count_24h,
            "card_present": card_present,
            "foreign": foreign,
            "account_age_days": account_age_days,
        }
    )
    for i in range(n_noise_features):
        frame[f"noise_{i}"] = rng.normal(0.0, 1.0, n)
    frame["is_fraud"] = is_fraud
    return frame


def _solve_intercept(logit: np.ndarray, rate: float) -> float:
    # Bisection on the mean predicted probability, which is monotone in the intercept.
    lo, hi = -50.0, 50.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logit + mid)))) < rate:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def existing_file(path: str | Path) -> Path:
    """The path of a data file that exists.

    Raises:
        RaySweepError: The file does not exist.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise RaySweepError(f"data file {str(p)!r} not found; set data.path to an existing CSV or Parquet file")
    return p


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file, chosen by its extension.

    Raises:
        RaySweepError: The file does not exist or has an extension raysweep does not read.
    """
    import pandas as pd

    p = existing_file(path)
    suffix = p.suffix.lower()
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(p)
    if suffix in (".csv", ".txt") or p.name.lower().endswith(".csv.gz"):
        return pd.read_csv(p)
    raise RaySweepError(f"data file {str(p)!r} is neither .csv nor .parquet; convert it or rename it")


def split(frame: pd.DataFrame, target: str, val_fraction: float, seed: int) -> Dataset:
    """Check a frame's columns and split it into stratified train and validation sets.

    Args:
        frame: Feature columns plus the target column.
        target: Name of the 0/1 target column.
        val_fraction: Share of rows held out for validation.
        seed: Seed of the split.

    Raises:
        RaySweepError: The target is missing or not binary, a feature column is not numeric, or a class
            is too rare to stratify.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    if target not in frame.columns:
        raise RaySweepError(
            f"target column {target!r} not in the data (columns: {', '.join(map(str, frame.columns[:12]))}); "
            "set data.target to the label column"
        )
    features = frame.drop(columns=[target])
    bad = [str(c) for c in features.columns if not (pd.api.types.is_numeric_dtype(features[c]) or pd.api.types.is_bool_dtype(features[c]))]
    if bad:
        raise RaySweepError(
            f"non-numeric feature column(s) {', '.join(bad[:5])}; encode them as numbers or drop them from the file"
        )
    if features.shape[1] == 0:
        raise RaySweepError("the data has no feature columns besides the target; add numeric feature columns")
    y = frame[target]
    classes = set(pd.unique(y.dropna()))
    if y.isna().any() or not classes <= {0, 1, True, False} or len(classes) != 2:
        raise RaySweepError(
            f"target column {target!r} must hold two classes as 0/1 (found {sorted(map(str, classes))[:5]}); "
            "map the labels to 0 and 1"
        )
    y = y.astype(int).to_numpy()
    if np.bincount(y).min() < 2:
        raise RaySweepError(f"target column {target!r} has fewer than 2 rows of one class; add data")
    # Feature dtypes stay as they are: the registered model's signature then matches the table it serves.
    X_train, X_val, y_train, y_val = train_test_split(
        features, y, test_size=val_fraction, stratify=y, random_state=seed
    )
    return Dataset(X_train.reset_index(drop=True), y_train, X_val.reset_index(drop=True), y_val)


def load(data_cfg) -> Dataset:
    """Build the dataset a sweep trains on from its ``data`` config.

    Args:
        data_cfg: The ``data`` config node (``source`` is ``synthetic`` or ``file``).
    """
    if data_cfg.source == "synthetic":
        frame = generate_fraud(data_cfg.n_samples, data_cfg.fraud_rate, data_cfg.n_noise_features, data_cfg.seed)
    else:
        frame = read_table(data_cfg.path)
    return split(frame, data_cfg.target, data_cfg.val_fraction, data_cfg.seed)
