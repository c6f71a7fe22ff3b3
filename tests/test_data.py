"""The fraud generator is deterministic and imbalanced; user tables load or fail with a clear line."""

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from raysweep.data import generate_fraud, load, split
from raysweep.errors import RaySweepError


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


def test_split_is_stratified_and_reproducible():
    frame = generate_fraud(10_000, 0.015, 2, seed=0)
    a, b = split(frame, "is_fraud", 0.25, seed=3), split(frame, "is_fraud", 0.25, seed=3)
    pd.testing.assert_frame_equal(a.X_val, b.X_val)
    assert len(a.X_val) == 2500
    assert a.y_val.mean() == pytest.approx(a.y_train.mean(), abs=0.002)
    assert "is_fraud" not in a.feature_names


def _file_cfg(path, target="label"):
    return OmegaConf.create({"source": "file", "path": str(path), "target": target, "val_fraction": 0.25, "seed": 0})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_user_tables_load_by_extension(tmp_path, suffix):
    frame = generate_fraud(2000, 0.05, 0, seed=1).rename(columns={"is_fraud": "label"})
    path = tmp_path / f"tx{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    dataset = load(_file_cfg(path))
    assert dataset.feature_names == [c for c in frame.columns if c != "label"]
    assert len(dataset.X_train) + len(dataset.X_val) == 2000


@pytest.mark.parametrize(
    "mutate, target, fragment",
    [
        (lambda f: f, "missing_col", "target column 'missing_col' not in the data"),
        (lambda f: f.assign(city="Paris"), "label", "non-numeric feature column(s) city"),
        (lambda f: f.assign(label=f["label"] * 2 + 1), "label", "must hold two classes as 0/1"),
        (lambda f: f[["label"]], "label", "no feature columns"),
    ],
)
def test_bad_tables_fail_with_one_line(tmp_path, mutate, target, fragment):
    frame = mutate(generate_fraud(500, 0.1, 0, seed=1).rename(columns={"is_fraud": "label"}))
    path = tmp_path / "tx.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(RaySweepError) as err:
        load(_file_cfg(path, target))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(RaySweepError, match="not found; set data.path"):
        load(_file_cfg(tmp_path / "nope.csv"))
