"""Data: the deterministic fraud generator, user tables of any task, three-way splits, one-line refusals."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from raysweep import preprocess
from raysweep.config import CONF_DIR, DataConfig
from raysweep.data import Dataset, check_config, from_frame, generate_fraud, infer_task, load, split
from raysweep.errors import RaySweepError


def _cfg(**values):
    return OmegaConf.merge(OmegaConf.structured(DataConfig), values)


def _file_cfg(path, target="label", **values):
    return _cfg(source="file", path=str(path), target=target, **values)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    frame.to_parquet(path) if path.suffix == ".parquet" else frame.to_csv(path, index=False)
    return path


def _one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message and ";" in message, message  # "problem; fix"
    return message


# --- the generated fraud data -------------------------------------------------------------------------------------

def test_generator_is_deterministic_per_seed():
    a = generate_fraud(5000, 0.015, 3, seed=7)
    b = generate_fraud(5000, 0.015, 3, seed=7)
    c = generate_fraud(5000, 0.015, 3, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


@pytest.mark.parametrize("rate", [0.01, 0.015, 0.02])
def test_generator_is_heavily_imbalanced_at_the_requested_rate(rate):
    frame = generate_fraud(40_000, rate, 4, seed=0)
    assert frame["is_fraud"].mean() == pytest.approx(rate, rel=0.2)
    assert set(frame["is_fraud"].unique()) == {0, 1}


def test_generator_has_informative_and_noise_columns():
    frame = generate_fraud(40_000, 0.015, 4, seed=0)
    y = frame["is_fraud"]
    noise = [f"noise_{i}" for i in range(4)]
    assert set(noise) <= set(frame.columns)
    corr = {c: abs(np.corrcoef(frame[c], y)[0, 1]) for c in frame.columns if c != "is_fraud"}
    assert max(corr[c] for c in noise) < 0.03
    assert corr["merchant_risk"] > 0.05 and corr["card_present"] > 0.05
    assert (frame["amount"] > 0).all() and frame["hour"].between(0, 23).all()


def test_fraud_data_loads_as_a_deterministic_stratified_three_way_split():
    a, b = load(_cfg(n_samples=10_000, seed=3)), load(_cfg(n_samples=10_000, seed=3))
    for part in ("X_train", "X_val", "X_test"):
        pd.testing.assert_frame_equal(getattr(a, part), getattr(b, part))
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert (a.task, a.classes) == ("binary", (0, 1))
    assert (len(a.X_train), len(a.X_val), len(a.X_test)) == pytest.approx((5500, 2500, 2000), abs=2)
    assert a.y_val.mean() == pytest.approx(a.y_train.mean(), abs=0.002)
    assert a.y_test.mean() == pytest.approx(a.y_train.mean(), abs=0.002)
    assert "is_fraud" not in a.feature_names and a.y_train.dtype == np.int64
    assert a.info.name == "fraud" and a.info.rows == 10_000 and a.info.features == len(a.feature_names)
    assert a.info.source.startswith("raysweep.data.generate_fraud(n_samples=10000") and a.info.digest == b.info.digest
    assert load(_cfg(n_samples=10_000, seed=4)).info.digest != a.info.digest


def test_the_three_splits_are_disjoint_and_cover_every_row():
    frame = generate_fraud(3000, 0.05, 0, seed=1).reset_index(names="row")
    dataset = from_frame(frame, "is_fraud", seed=5)
    rows = [set(part["row"]) for part in (dataset.X_train, dataset.X_val, dataset.X_test)]
    assert sum(map(len, rows)) == 3000 and set.union(*rows) == set(range(3000))


def test_the_older_two_argument_split_and_four_field_dataset_still_work():
    dataset = split(generate_fraud(2000, 0.05, 2, seed=0), "is_fraud", 0.25, seed=0)
    assert len(dataset.X_val) == pytest.approx(500, abs=1) and len(dataset.X_test) == pytest.approx(400, abs=1)
    old = Dataset(dataset.X_train, dataset.y_train, dataset.X_val, dataset.y_val)
    assert len(old.X_test) == 0 and len(old.y_test) == 0 and old.classes == (0, 1) and old.task == "binary"
    assert old.fraud_rate == pytest.approx(np.concatenate([dataset.y_train, dataset.y_val]).mean())


def test_data_source_none_loads_nothing():
    assert load(_cfg(source="none")) is None
    assert load({"source": "none"}) is None


# --- tasks --------------------------------------------------------------------------------------------------------

_N = 200


@pytest.mark.parametrize(
    "values, task",
    [
        (["Yes", "No"] * (_N // 2), "binary"),
        ([True, False] * (_N // 2), "binary"),
        ([0, 1] * (_N // 2), "binary"),
        ([0.0, 1.0] * (_N // 2), "binary"),
        ([5, 7] * (_N // 2), "binary"),
        (["cat", "dog", "bird", "cow"] * (_N // 4), "multiclass"),
        (pd.Categorical(["a", "b", "c", "d"] * (_N // 4)), "multiclass"),
        ([1, 2, 3] * (_N // 3) + [1, 2], "multiclass"),
        (list(range(10)) * (_N // 10), "multiclass"),  # 10 <= 5 % of 200
        (list(range(11)) * 18 + [0, 1], "regression"),  # 11 > 5 % of 200
        (list(range(25)) * 8, "regression"),  # more than 20 values
        ([1.5, 2.5, 3.5] * (_N // 3) + [1.5, 2.5], "regression"),  # not whole numbers
        (list(np.linspace(0, 1, _N)), "regression"),
    ],
)
def test_the_auto_task_rule(values, task):
    assert infer_task(pd.Series(values)) == task


def test_three_classes_are_always_allowed_in_a_small_table():
    assert infer_task(pd.Series([1, 2, 3] * 4)) == "multiclass"  # 5 % of 12 rows is under 3


def _table(target, n=_N, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n), "label": target})


@pytest.mark.parametrize(
    "target, task, classes, y_dtype",
    [
        (["No", "Yes"] * (_N // 2), "binary", ("No", "Yes"), np.int64),
        ([1.0, 0.0] * (_N // 2), "binary", (0, 1), np.int64),
        ([False, True] * (_N // 2), "binary", (False, True), np.int64),
        (["setosa", "virginica", "versicolor", "setosa"] * (_N // 4), "multiclass",
         ("setosa", "versicolor", "virginica"), np.int64),
        (list(np.linspace(0, 100, _N)), "regression", (), np.float64),
    ],
)
def test_the_target_is_encoded_and_the_labels_kept(target, task, classes, y_dtype):
    dataset = from_frame(_table(target), "label")
    assert (dataset.task, dataset.classes) == (task, classes)
    assert dataset.y_train.dtype == y_dtype and "label" not in dataset.feature_names
    if classes:
        assert set(np.unique(dataset.y_train)) == set(range(len(classes)))
        assert set(dataset.labels(dataset.y_val)) <= set(classes)
        assert all(type(c) is type(classes[0]) for c in classes)  # plain Python labels, not numpy scalars


@pytest.mark.parametrize(
    "target, task, expected",
    [
        (["a", "b"] * (_N // 2), "multiclass", ("multiclass", ("a", "b"))),
        ([1, 2, 3, 4] * (_N // 4), "regression", ("regression", ())),
        (list(range(40)) * (_N // 40), "multiclass", ("multiclass", tuple(range(40)))),
    ],
)
def test_an_explicit_task_overrides_the_rule(target, task, expected):
    dataset = from_frame(_table(target), "label", task=task)
    assert (dataset.task, dataset.classes) == expected


@pytest.mark.parametrize("target", [
    pd.Series([0, 1] * 200, dtype=float),  # numbers: NaN
    pd.Series(["no", "yes"] * 200, dtype=object),  # labels: None, as a CSV's empty cell in an object column
    pd.Series([0.5, 1.5] * 200),  # a regression target
])
def test_rows_without_a_target_value_are_left_out_with_a_warning(target, caplog):
    frame = _fraud_table().assign(label=target.mask(np.arange(400) % 10 == 0))  # 40 rows not labelled
    with caplog.at_level("WARNING", logger="raysweep.data"):
        data = from_frame(frame, "label", seed=0)
    assert data.info.rows == 360 and len(data.y_train) + len(data.y_val) + len(data.y_test) == 360
    assert "40 of 400 rows have no 'label' (the target) and are left out" in caplog.text
    labelled = frame[frame["label"].notna()].reset_index(drop=True)
    assert data.info.digest == from_frame(labelled, "label", seed=0).info.digest  # the same as dropping them first


def test_a_class_of_one_row_among_many_trains_and_is_named_in_a_warning(caplog):
    frame = pd.concat([_fraud_table().assign(label=np.arange(400) % 3), _fraud_table(1).assign(label=7)],
                      ignore_index=True)
    with caplog.at_level("WARNING", logger="raysweep.data"):
        data = from_frame(frame, "label", seed=0)
    assert data.task == "multiclass" and data.classes == (0, 1, 2, 7)
    assert 3 in data.y_train and 3 not in data.y_val and 3 not in data.y_test  # class 7 is code 3
    assert "1 class(es) of 'label' have one row (7): they go to training" in caplog.text


# --- refusals -----------------------------------------------------------------------------------------------------

def _fraud_table(n=400):
    return generate_fraud(n, 0.2, 0, seed=1).rename(columns={"is_fraud": "label"})


@pytest.mark.parametrize(
    "frame, options, fragment",
    [
        (_fraud_table().assign(label=np.nan), {}, "target column 'label' has no values (all 400 rows are empty)"),
        (_fraud_table().assign(label="Yes"), {}, "one class only ('Yes')"),
        (_fraud_table().assign(label=lambda f: (f.index == 5).astype(int)), {},
         "class 1 of target column 'label' has 1 row; a binary task needs at least 2 per class"),
        (_fraud_table().assign(label=[f"c{i}" if i % 4 else "c-0" for i in range(400)]), {},
         "target column 'label' has 301 classes in 400 rows, 300 of them seen once: not labels a model can learn"),
        (_fraud_table().assign(label=lambda f: pd.date_range("2024-01-01", periods=len(f), freq="h").astype(str)
                               .str[:10]), {}, "target column 'label' holds dates or times, which are neither"),
        (_fraud_table().assign(label=pd.Timestamp("2024-01-01")), {}, "target column 'label' holds dates or times"),
        (_fraud_table().assign(label=np.arange(400) % 3), {"task": "binary"},
         "data.task=binary but target column 'label' has 3 classes; use data.task=multiclass"),
        (_fraud_table().assign(label=np.linspace(0.5, 99.5, 400)), {"task": "binary"},
         "has 400 classes; use data.task=regression (what auto picks for it)"),
        (_fraud_table().assign(label=np.linspace(0.5, 99.5, 400)), {"task": "multiclass"},
         "data.task=multiclass but target column 'label' holds 400 distinct fractional numbers (e.g. 0.5)"),
        # Every class names a column of the served model's answer, beside "label".
        (_fraud_table().assign(label=lambda f: f["label"].map({0: "other", 1: "label"})), {},
         "class 'label' of target column 'label' names the column of each row's predicted class"),
        (_fraud_table().assign(label=lambda f: f["label"].map({0: 1, 1: "1"})), {},
         "class '1' of target column 'label' prints as 1 does"),
        (_fraud_table().assign(label=lambda f: f["label"].map({0: "n", 1: "y"})), {"task": "regression"},
         "data.task=regression needs a numeric target"),
        (_fraud_table().assign(customer=lambda f: [f"c{i}" for i in range(len(f))]), {},
         "column 'customer' has a different value in every row (an ID?)"),
        (_fraud_table().assign(when=pd.Timestamp("2024-01-01")), {}, "column 'when' holds dates or times"),
        # ... and as a CSV gives them: text, which would be one category per date.
        (_fraud_table().assign(when=lambda f: pd.date_range("2024-01-01", periods=len(f), freq="6h")
                               .strftime("%Y-%m-%d").where(f.index % 50 != 0)), {},
         "column 'when' holds dates or times"),
        (_fraud_table().assign(when="2024-01-01T12:30:00Z"), {}, "column 'when' holds dates or times"),
        # Numbers with placeholders for their gaps would be read as one category per number.
        (_fraud_table().assign(amount=lambda f: f["amount"].astype(object).mask(f.index % 200 == 3, "?")), {},
         "column 'amount' holds numbers but also '?', so it would be read as categories"),
        (_fraud_table().assign(amount=lambda f: f["amount"].astype(str).mask(f.index == 5, "unknown")
                               .mask(f.index == 9, " - ")), {}, "holds numbers but also 'unknown', ' - ', so"),
        (_fraud_table()[["label"]], {}, "no feature columns"),
        (_fraud_table(), {"target": "nope"}, "target column 'nope' not in the data"),
        (_fraud_table(), {"drop": ["id", "amount"]}, "data.drop names column(s) 'id' not in the data"),
        (_fraud_table(), {"drop": ["label"]}, "data.drop names the target 'label'"),
        (_fraud_table(), {"split": "group"}, "data.split=group needs the column"),
        (_fraud_table(), {"split": "time"}, "data.split=time needs the column"),
        (_fraud_table(), {"group_column": "hour"}, "data.group_column='hour' is only used by data.split=group"),
        (_fraud_table(), {"split": "group", "group_column": "card_present"},
         "data.group_column='card_present' has 2 distinct value(s)"),
        (_fraud_table(), {"split": "group", "group_column": "missing"}, "data.group_column='missing' is not a column"),
        (_fraud_table().assign(t="soon"), {"split": "time", "time_column": "t"}, "neither numbers nor dates"),
        (_fraud_table(), {"val_fraction": 0.5, "test_fraction": 0.5}, "leave no rows for training"),
        (pd.DataFrame({"x": [1.0, 2.0], "label": [0.5, 1.5]}), {"task": "regression"}, "too few"),
    ],
)
def test_what_cannot_be_learned_is_refused_in_one_line(frame, options, fragment):
    options = {"target": "label", **options}
    with pytest.raises(RaySweepError) as error:
        from_frame(frame.reset_index(drop=True), options.pop("target"), **options)
    assert fragment in _one_line(error)


@pytest.mark.parametrize("code", [
    ["red", "blue", "green", "7"] * 100,        # categories, one of them a number
    [str(v) for v in range(390)] + ["?"] * 10,  # more than a few that are no number: categories
    [1.5] * 395 + [None] * 5,                   # numbers with gaps
    ["?"] * 395 + ["1", "2", "3", "4", "5"],    # too few numbers
])
def test_text_columns_that_are_no_numbers_with_placeholders_are_features(code):
    assert "code" in from_frame(_fraud_table().assign(code=code), "label").feature_names


def test_a_time_split_refusal_names_the_rows_order():
    # The time column sorts the rows: a class seen only in the latest rows never reaches training.
    frame = _fraud_table().assign(label=lambda f: (f["account_age_days"].rank() > 395).astype(int))
    with pytest.raises(RaySweepError, match="data.split=time left class"):
        from_frame(frame, "label", split="time", time_column="account_age_days")


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("", "has no rows"),
        ("a,b,label\n", "has no rows"),
        ("a,b,label\n1,2,0\n3,4,1,9\n5,6,0\n", "line 3 has 4 fields, the header 3"),
        ("a,b,label\n1,2,0\n3,4\n5,6,0\n", "line 3 has 2 fields, the header 3"),
    ],
)
def test_empty_and_ragged_files_are_refused(tmp_path, content, fragment):
    path = tmp_path / "table.csv"
    path.write_text(content)
    with pytest.raises(RaySweepError) as error:
        load(_file_cfg(path))
    assert fragment in _one_line(error) and str(path) in str(error.value)


def test_quoted_commas_and_blank_lines_are_not_ragged(tmp_path):
    lines = ["a,city,label"] + [f'{i},"Paris, France",{i % 2}' for i in range(40)] + [""]
    dataset = load(_file_cfg(_write_text(tmp_path / "t.csv", "\n".join(lines) + "\n")))
    assert dataset.info.rows == 40


@pytest.mark.parametrize(
    "text, settings, fragment",
    [
        ("amount;age;label\n12.5;33;0\n", {}, "reads as one column 'amount;age;label': its fields look separated "
                                              "by ';', not ','; add \"data.sep=';'\""),
        ("amount\tage\tlabel\n12.5\t33\t0\n", {}, "add \"data.sep='\\t'\""),
        ("amount,age,label\n12.5,33,0\n", {"sep": ";"}, "look separated by ',', not ';'; add \"data.sep=','\""),
        ("amount;age;label\n12,5;33;0\n-0,25;40;1\n", {"sep": ";"},
         "column 'amount' of data file"),
        ("a;b;label\n1;2;0\n", {"sep": ";;"}, "data.sep=';;'; it must be one character"),
        ("a;b;label\n1;2;0\n", {"sep": ",", "decimal": ","}, "data.sep and data.decimal are both ','"),
    ],
)
def test_a_csv_read_with_the_wrong_separator_or_decimal_mark_names_the_setting(tmp_path, text, settings, fragment):
    path = _write_text(tmp_path / "export.csv", text)
    with pytest.raises(RaySweepError) as error:
        load(_file_cfg(path, **settings))
    assert fragment in _one_line(error)


def test_a_csv_in_another_encoding_reads_with_data_encoding_and_a_bom_is_no_part_of_a_name(tmp_path):
    frame = pd.DataFrame({"city": ["Zürich", "Genève", "Köln", "Bern"] * 10, "label": [0, 1] * 20})
    frame.to_csv(tmp_path / "windows.csv", index=False, encoding="cp1252")
    frame.to_csv(tmp_path / "excel_utf8.csv", index=False, encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    for name, encoding in (("windows.csv", "cp1252"), ("excel_utf8.csv", "utf-8")):
        cfg = {"source": "file", "path": str(tmp_path / name), "target": "label", "encoding": encoding}
        check_config(cfg)
        dataset = load(cfg)
        assert list(dataset.X_train.columns) == ["city"]
        assert set(dataset.X_train.city) | set(dataset.X_val.city) == {"Zürich", "Genève", "Köln", "Bern"}
    with pytest.raises(RaySweepError, match="is not utf-8 text: byte fc on line 2; set data.encoding"):
        load({"source": "file", "path": str(tmp_path / "windows.csv"), "target": "label"})


def test_a_folder_of_parquet_parts_and_a_tsv_file_load_as_tables(tmp_path):
    frame = pd.DataFrame({"amount": np.arange(60) * 1.5, "city": ["a", "b", "c"] * 20, "label": [0, 1] * 30})
    (tmp_path / "parts").mkdir()  # as Spark writes a table: part files and a marker
    for i in range(3):
        frame.iloc[20 * i:20 * (i + 1)].to_parquet(tmp_path / "parts" / f"part-{i:05d}.parquet")
    (tmp_path / "parts" / "_SUCCESS").write_text("")
    (tmp_path / "parts" / ".part-00000.parquet.crc").write_text("")  # Hadoop's checksums: pyarrow skips them
    frame.to_csv(tmp_path / "table.tsv", sep="\t", index=False)  # tabs, with data.sep left at ","
    for name in ("parts", "table.tsv"):
        cfg = {"source": "file", "path": str(tmp_path / name), "target": "label"}
        check_config(cfg)
        dataset = load(cfg)
        assert dataset.info.rows == 60 and list(dataset.X_train.columns) == ["amount", "city"]
    (tmp_path / "nothing").mkdir()
    with pytest.raises(RaySweepError, match="is a folder without Parquet files"):
        load({"source": "file", "path": str(tmp_path / "nothing"), "target": "label"})
    (tmp_path / "parts" / "schema.json").write_text("{}")  # any other file would be read as a part
    with pytest.raises(RaySweepError, match="is a folder of Parquet parts that also holds 'schema.json', which is "
                                            "not Parquet; move it out of the folder"):
        load({"source": "file", "path": str(tmp_path / "parts"), "target": "label"})


def test_a_csv_with_its_separator_and_decimal_mark_set_reads_numbers(tmp_path):
    lines = ["amount;city;label"] + [f"{i},5;Paris, France;{i % 2}" for i in range(40)]
    path = _write_text(tmp_path / "export.csv", "\n".join(lines) + "\n")
    dataset = load(_file_cfg(path, sep=";", decimal=","))
    X = dataset.xy("train")[0]
    assert X["amount"].dtype.kind == "f" and set(X["amount"] % 1) == {0.5}
    assert (X["city"] == "Paris, France").all()
    # A tab typed at a shell reaches the config as backslash and t.
    tabbed = _write_text(path.with_name("tabbed.csv"), "\n".join(line.replace(";", "\t") for line in lines) + "\n")
    assert load(_file_cfg(tabbed, sep="\\t", decimal=",")).info.rows == 40


def _write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_target_text_pandas_reads_as_a_gap_is_named_with_its_rows(tmp_path, caplog):
    # "None" is a class here, but pandas reads it as missing (as it does R's NA): the warning says which text.
    rows = [f"{i},{['None', 'Minor', 'Major'][i % 3]}" for i in range(60)] + ["60,", "61,NA"]
    path = _write_text(tmp_path / "claims.csv", "amount,damage\n" + "\n".join(rows) + "\n")
    with caplog.at_level("WARNING", logger="raysweep.data"):
        dataset = load(_file_cfg(path, target="damage"))
    assert dataset.classes == ("Major", "Minor") and dataset.info.rows == 40
    assert "target column 'damage' holds 'None' (20 rows), 'NA' (1 row), which pandas reads as missing" in caplog.text
    assert "22 of 62 rows have no 'damage'" in caplog.text  # the empty field is a gap too, named by no text


@pytest.mark.parametrize(
    "values, fragment",
    [
        ({"n_samples": 0}, "data.n_samples=0; it must be at least 1"),
        ({"n_samples": -5}, "data.n_samples=-5"),
        ({"fraud_rate": 0.7}, "data.fraud_rate=0.7"),
        ({"path": "x.csv"}, "data.path='x.csv' is set but data.source=synthetic generates its data"),
        ({"source": "file"}, "data=csv needs a file"),
        ({"source": "file", "path": "/no/such.csv", "target": "y"}, "not found; set data.path"),
        ({"source": "file", "path": "data.xlsx", "target": "y"}, None),
        ({"val_fraction": 0.0}, "data.val_fraction=0.0; it must be between 0 and 1"),
        ({"test_fraction": 1.0}, "data.test_fraction=1.0; it must be between 0 and 1"),
        ({"val_fraction": 0.6, "test_fraction": 0.4}, "leave no rows for training"),
        ({"split": "group"}, "data.split=group needs the column"),
        ({"split": "time"}, "add data.time_column=COLUMN"),
        ({"time_column": "hour"}, "data.time_column='hour' is only used by data.split=time"),
    ],
)
def test_the_config_checks_refuse_before_anything_loads(tmp_path, monkeypatch, values, fragment):
    monkeypatch.chdir(tmp_path)
    if fragment is None:  # an existing file raysweep cannot read
        (tmp_path / "data.xlsx").write_bytes(b"PK")
        fragment = "is neither .csv (.tsv, .txt) nor .parquet"
    with pytest.raises(RaySweepError) as error:
        check_config(_cfg(**values))
    assert fragment in _one_line(error)


def test_the_config_check_reads_only_the_header_to_find_named_columns(tmp_path):
    path = _write(_fraud_table(), tmp_path / "t.csv")
    csv = OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(CONF_DIR / "data" / "csv.yaml"))
    with pytest.raises(RaySweepError, match=r"^data=csv needs the label column .*; add data.target=COLUMN$"):
        check_config(OmegaConf.merge(csv, {"path": str(path)}))  # target: ??? left unset
    check_config(_file_cfg(path, drop=["foreign"]))
    with pytest.raises(RaySweepError, match="data.drop names column"):
        check_config(_file_cfg(path, drop=["customer_id"]))
    with pytest.raises(RaySweepError, match="target column 'Label' not in the data"):
        check_config(_file_cfg(path, target="Label"))
    check_config(_cfg(source="none", path="anything", n_samples=0))  # data=none checks nothing


# --- user tables: strings, categories, gaps -----------------------------------------------------------------------

def _churn(n=300, seed=0):
    rng = np.random.default_rng(seed)
    plan = rng.choice(["basic", "plus", "pro"], n)
    frame = pd.DataFrame({
        "customer_id": [f"C{i:05d}" for i in range(n)],
        "tenure": rng.integers(1, 60, n).astype(float),
        "plan": plan,
        "region": pd.Categorical(rng.choice(["north", "south", "east"], n)),
        "paperless": rng.choice([True, False], n),
        "charges": rng.normal(70, 20, n),
        "Churn": np.where((plan == "basic") & (rng.random(n) < 0.7), "Yes", "No"),
    })
    for column in ("tenure", "plan", "region"):  # gaps in a number, a string and a category column
        frame.loc[rng.random(n) < 0.1, column] = np.nan
    return frame


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_table_with_a_string_target_strings_categories_and_gaps_loads_raw(tmp_path, suffix):
    path = _write(_churn(), tmp_path / f"churn{suffix}")
    dataset = load(_file_cfg(path, target="Churn", drop=["customer_id"]))
    assert (dataset.task, dataset.classes) == ("binary", ("No", "Yes"))
    assert dataset.feature_names == ["tenure", "plan", "region", "paperless", "charges"]
    assert dataset.X_train["plan"].isna().any()  # raw: gaps kept, strings kept
    assert dataset.info.name == "churn" and dataset.info.source == str(path.resolve())
    assert dataset.info.rows == 300 and dataset.info.features == 5
    transformer = preprocess.build(dataset.X_train).fit(dataset.X_train)
    out = transformer.transform(dataset.X_test)
    assert out.dtype == np.float64 and not np.isnan(out).any() and isinstance(out, np.ndarray)


def test_an_id_column_is_refused_until_dropped(tmp_path):
    path = _write(_churn(), tmp_path / "churn.csv")
    with pytest.raises(RaySweepError, match=r"column 'customer_id' .* add it to data.drop"):
        load(_file_cfg(path, target="Churn"))


def test_pandas_nullable_columns_become_numpy_columns_with_nan_gaps():
    frame = pd.DataFrame({
        "count": pd.array([1, None, 3, 4] * 10, dtype="Int64"),
        "whole": pd.array([1, 2, 3, 4] * 10, dtype="Int64"),
        "flag": pd.array([True, None, False, True] * 10, dtype="boolean"),
        "name": pd.array(["a", None, "b", "a"] * 10, dtype="string"),
        "note": pd.Series(["x", None, "y", "x"] * 10, dtype=object),
        "label": [0, 1] * 20,
    })
    X = from_frame(frame, "label").X_train
    dtypes = (X["count"].dtype, X["whole"].dtype, X["flag"].dtype, X["name"].dtype)
    assert dtypes == ("float64", "int64", object, object)
    assert X["note"].map(lambda v: v is None).sum() == 0  # None -> NaN: the imputer fills it
    assert preprocess.build(X).fit_transform(X).dtype == np.float64


@pytest.mark.parametrize("rows, warned", [(12, True), (36, True), (40, False)])
def test_a_validation_split_too_small_to_rank_trials_is_named(rows, warned, caplog):
    frame = pd.DataFrame({"x": np.arange(rows, dtype=float), "spend": np.arange(rows) * 1.5 + 3})
    with caplog.at_level("WARNING", logger="raysweep.data"):
        dataset = from_frame(frame, "spend")
    lines = [r.getMessage() for r in caplog.records]
    assert bool(lines) == warned, lines
    if warned:
        assert lines == [f"raysweep: the validation split holds {len(dataset.y_val)} of the data's {rows} rows, too "
                         "few for its metric to tell trials apart (or the test split to judge the model); add rows, "
                         "or raise data.val_fraction"]


@pytest.mark.parametrize("ids, named", [(np.arange(1, 41), True), (np.random.default_rng(0).permutation(40), True),
                                        (np.arange(0, 80, 2), False), (np.r_[np.arange(39), 38], False)])
def test_a_column_of_row_numbers_is_named_but_kept(ids, named, caplog):
    frame = pd.DataFrame({"Id": ids, "x": np.linspace(0, 1, 40), "label": [0, 1] * 20})
    with caplog.at_level("WARNING", logger="raysweep.data.features"):
        dataset = from_frame(frame, "label")
    assert "Id" in dataset.X_train.columns
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ([f"raysweep: column 'Id' numbers the rows ({ids.min()} to {ids.max()}, each once), from which "
                      "a model learns only the order they came in; add it to data.drop (data.drop=[Id]) unless it "
                      "means more"] if named else [])


@pytest.mark.parametrize("index", [np.arange(40), np.arange(1, 41), [f"car {i}" for i in range(40)]])
def test_the_row_index_a_csv_export_writes_is_no_feature(tmp_path, index, caplog):
    # pandas' to_csv and R's write.csv write the row index as a first column with an empty name.
    frame = pd.DataFrame({"x": np.linspace(0, 1, 40), "label": [0, 1] * 20}, index=index)
    frame.to_csv(tmp_path / "exported.csv")
    for drop in ([], ["Unnamed: 0"]):  # naming it in data.drop, as the row-number warning once said, still works
        with caplog.at_level("WARNING", logger="raysweep.data"):
            dataset = load({"source": "file", "path": str(tmp_path / "exported.csv"), "target": "label", "drop": drop})
        assert list(dataset.X_train.columns) == ["x"]
        assert not caplog.records


def test_an_unnamed_first_column_that_repeats_values_is_a_feature(tmp_path):
    (tmp_path / "t.csv").write_text(",x,label\n" + "".join(f"{i % 3},{i / 40},{i % 2}\n" for i in range(40)))
    dataset = load({"source": "file", "path": str(tmp_path / "t.csv"), "target": "label"})
    assert list(dataset.X_train.columns) == ["Unnamed: 0", "x"]


@pytest.mark.parametrize("column", ["amount", "a.b", "Unnamed: 0", "order date", "it's", 'a"b', "x,y", "ü col", "-1",
                                    "01", "null", "True", "nan", "x=y", "[a]", "résultat", "~/x.csv"])
def test_a_column_named_in_a_fix_is_typed_as_a_shell_and_hydra_take_it(column):
    import shlex

    from hydra.core.override_parser.overrides_parser import OverridesParser

    from raysweep.data.features import override

    parser = OverridesParser.create()
    for typed, value in ((override("data.drop", column, listed=True), [column]),
                         (override("data.time_column", column), column)):
        args = shlex.split(typed)
        assert len(args) == 1, typed
        assert parser.parse_override(args[0]).value() == value, typed


def test_a_column_with_no_value_in_training_is_left_out_without_a_warning():
    # A CSV's empty column reads as float NaN, a Parquet one may hold objects: neither has anything to learn.
    X = pd.DataFrame({"amount": [1.0, 2.0, None, 4.0] * 10, "blank": [np.nan] * 40, "void": pd.Series([None] * 40,
                                                                                                      dtype=object),
                      "city": ["a", "b", None, "a"] * 10})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's "Skipping features without any observed values"
        fitted = preprocess.build(X).fit(X)
        served = fitted.transform(X.assign(blank=7.0, void="new"))  # a value served there later is ignored
    assert served.shape == fitted.transform(X).shape == (40, 1 + 1 + 2)  # amount, its gap indicator, city a/b
    assert (served == fitted.transform(X)).all()


# --- group and time splits ----------------------------------------------------------------------------------------

def test_a_group_split_keeps_every_group_on_one_side():
    rng = np.random.default_rng(0)
    frame = _fraud_table(2000).assign(store=rng.integers(0, 60, 2000))
    a = from_frame(frame.assign(store_copy=frame["store"]), "label", split="group", group_column="store", seed=3)
    sides = [set(part["store_copy"]) for part in (a.X_train, a.X_val, a.X_test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert "store" not in a.feature_names
    assert len(a.X_test) == pytest.approx(400, rel=0.25) and len(a.X_val) == pytest.approx(500, rel=0.25)
    b = from_frame(frame.assign(store_copy=frame["store"]), "label", split="group", group_column="store", seed=3)
    pd.testing.assert_frame_equal(a.X_test, b.X_test)


@pytest.mark.parametrize("as_dates", [False, True])
def test_a_time_split_trains_on_the_past_and_tests_on_the_latest(as_dates):
    frame = _fraud_table(1000).sample(frac=1.0, random_state=0).reset_index(drop=True)
    day = frame["account_age_days"]
    frame["when"] = (pd.Timestamp("2020-01-01") + pd.to_timedelta(day, unit="D")).dt.strftime("%Y-%m-%d") \
        if as_dates else day
    dataset = from_frame(frame.assign(day=day), "label", split="time", time_column="when")
    train, val, test = (part["day"] for part in (dataset.X_train, dataset.X_val, dataset.X_test))
    assert train.max() <= val.min() and val.max() <= test.min()
    assert (len(train), len(val), len(test)) == (550, 250, 200)
    assert "when" not in dataset.feature_names


# --- the config files ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml")))
def test_every_data_config_composes_onto_the_schema_with_every_key_commented(name):
    path = CONF_DIR / "data" / f"{name}.yaml"
    OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.load(path))
    keys = [line for line in path.read_text().splitlines() if re.match(r"^\w+:", line)]
    assert keys and all("#" in line for line in keys), [line for line in keys if "#" not in line]


def test_data_none_is_a_data_choice():
    assert OmegaConf.load(CONF_DIR / "data" / "none.yaml").source == "none"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["data.n_samples=0"], "data.n_samples=0; it must be at least 1"),
        (["data=csv", "data.path=TABLE"], "data=csv needs the label column"),
        (["data=csv", "data.path=TABLE", "data.target=label", "data.split=group"], "data.split=group needs"),
        (["data=csv", "data.path=TABLE", "data.target=label", "data.drop=[nope]"], "data.drop names column(s) 'nope'"),
        (["data.test_fraction=0.8"], "leave no rows for training"),
    ],
)
def test_config_validate_runs_the_data_checks(tmp_path, overrides, fragment):
    from conftest import compose_cfg

    from raysweep.config import validate

    table = _write(_fraud_table(), tmp_path / "t.csv")
    cfg = compose_cfg(tmp_path, "+sweep=fraud", *(o.replace("TABLE", str(table)) for o in overrides))
    with pytest.raises(RaySweepError) as error:
        validate(cfg)
    assert fragment in _one_line(error)


def test_data_none_composes_and_validates_without_data_keys(tmp_path):
    from conftest import compose_cfg

    cfg = compose_cfg(tmp_path, "+sweep=fraud", "data=none")
    assert cfg.data.source == "none"
    assert load(cfg.data) is None


def test_preprocessing_passes_clean_numbers_through_and_can_standardise():
    dataset = load(_cfg(n_samples=2000))
    out = preprocess.build(dataset.X_train).fit(dataset.X_train).transform(dataset.X_val)
    np.testing.assert_allclose(out, dataset.X_val.to_numpy(dtype="float64"))  # no gaps: no indicator columns
    scaled = preprocess.build(dataset.X_train, scale=True).fit_transform(dataset.X_train)
    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-9)
    assert preprocess.column_kinds(_churn().drop(columns="Churn")) == (
        ["tenure", "paperless", "charges"], ["customer_id", "plan", "region"])


def test_a_column_of_many_codes_becomes_a_bounded_number_of_columns():
    # Dense one-hot of 5,000 codes would be 5,000 columns per row; the rare ones share one instead.
    codes = [f"z{i}" for i in range(5000)] + ["common"] * 3000
    X = pd.DataFrame({"zip": codes, "plan": (["a", "b", None] * 3000)[:8000]})
    fitted = preprocess.build(X).fit(X)
    assert fitted.transform(X).shape == (8000, preprocess.MAX_CATEGORIES + 2)  # zip's columns, plan a/b
    served = fitted.transform(pd.DataFrame({"zip": ["common", "z17", "never-seen"], "plan": ["a", "new", None]}))
    zip_columns = served[:, :preprocess.MAX_CATEGORIES]
    assert (zip_columns.sum(axis=1) == 1).all()  # every served zip lands in exactly one column
    assert (zip_columns[1] == zip_columns[2]).all() and not (zip_columns[0] == zip_columns[1]).all()
    assert served[1, -2:].sum() == 0 and served[2, -2:].tolist() == [1.0, 0.0]  # plan: unseen -> zeros; gap -> 'a'
