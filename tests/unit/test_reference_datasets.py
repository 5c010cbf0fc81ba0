"""The digits and diabetes tables built from scikit-learn's bundled data, their suites and the digits CNN."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.datasets import WindowSpec, cut_window, read_table
from airflow_mlops.validation import ValidationConfig, ValidationService

REPO = Path(__file__).resolve().parents[2]
BUILDERS = REPO / "include" / "datasets"
SUITES = REPO / "include" / "expectations"
PIXELS = [f"px_{i}" for i in range(64)]
DIABETES_FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """Both tables built by their scripts, exactly as `make data` runs them."""
    root = tmp_path_factory.mktemp("reference")
    out = {}
    for name in ("digits", "diabetes"):
        path = root / name / f"{name}.parquet"
        subprocess.run([sys.executable, str(BUILDERS / f"build_{name}.py"), "--out", str(path)], check=True,
                       capture_output=True)
        out[name] = path
    return out


def _batch_sizes(df: pd.DataFrame) -> list[int]:
    return df.groupby("batch").size().tolist()


def test_digits_table(tables):
    df = pd.read_parquet(tables["digits"])
    assert df.shape == (1797, 67)
    assert list(df.columns) == ["row_id", "batch", *PIXELS, "digit"]
    assert df["row_id"].tolist() == list(range(1797))
    assert df["batch"].is_monotonic_increasing and sorted(df["batch"].unique()) == list(range(1, 19))
    assert all(99 <= n <= 100 for n in _batch_sizes(df))
    assert str(df["digit"].dtype) == "int64" and sorted(df["digit"].unique()) == list(range(10))
    assert (df[PIXELS].dtypes == "float64").all() and df[PIXELS].min().min() == 0 and df[PIXELS].max().max() == 16
    assert str(df["batch"].dtype) == "int64" and str(df["row_id"].dtype) == "int64"


def test_diabetes_table(tables):
    df = pd.read_parquet(tables["diabetes"])
    assert df.shape == (442, 13)
    assert list(df.columns) == ["row_id", "batch", *DIABETES_FEATURES, "progression"]
    assert df["batch"].is_monotonic_increasing and sorted(df["batch"].unique()) == list(range(1, 12))
    assert all(40 <= n <= 41 for n in _batch_sizes(df))
    assert (df[[*DIABETES_FEATURES, "progression"]].dtypes == "float64").all()
    assert str(df["batch"].dtype) == "int64" and str(df["row_id"].dtype) == "int64"
    # Raw units (scaled=False): age in years, sex coded 1/2, progression 25..346.
    assert df["age"].between(19, 79).all() and set(df["sex"]) == {1.0, 2.0}
    assert (df["progression"].min(), df["progression"].max()) == (25.0, 346.0)


def test_builds_are_deterministic(tables, tmp_path):
    for name, first in tables.items():
        again = tmp_path / f"{name}.parquet"
        subprocess.run([sys.executable, str(BUILDERS / f"build_{name}.py"), "--out", str(again)], check=True,
                       capture_output=True)
        pd.testing.assert_frame_equal(pd.read_parquet(first), pd.read_parquet(again))


def test_digits_cnn_from_its_import_path(monkeypatch):
    import torch

    from airflow_mlops.factories import build_model

    monkeypatch.syspath_prepend(str(REPO))
    model = build_model({"factory": "include.models.digits_cnn:digits_cnn",
                         "kwargs": {"in_features": 64, "out_features": 10, "channels": 8,
                                    "feature_mean": [4.0] * 64, "feature_std": [6.0] * 64}},
                        allowed=["include.models.digits_cnn:*"])
    torch.manual_seed(0)
    out = model(torch.rand(5, 64) * 16)
    assert out.shape == (5, 10) and torch.isfinite(out).all()
    plain = build_model({"factory": "include.models.digits_cnn:digits_cnn", "kwargs": {}},
                        allowed=["include.models.digits_cnn:digits_cnn"])
    assert plain(torch.zeros(5, 64)).shape == (5, 10)


@pytest.mark.parametrize("name", ["digits", "diabetes"])
def test_suite_passes_on_the_whole_table(tables, name):
    summary = ValidationService().validate(ValidationConfig(str(tables[name]), str(SUITES / f"{name}.json"),
                                                            allowed_root=str(tables[name].parent))).summary
    assert summary["success"] is True and summary["failed"] == 0 and summary["warned"] == 0
    assert summary["suite"] == name and summary["rows"] == len(pd.read_parquet(tables[name]))
    assert summary["evaluated"] >= (200 if name == "digits" else 40)


@pytest.mark.parametrize("name, first, last, batches", [("digits", "3", "5", [3, 4, 5]),
                                                        ("diabetes", 2, "4", [2, 3, 4])])
def test_suite_passes_on_a_numeric_window(tables, tmp_path, name, first, last, batches):
    window = cut_window(WindowSpec(str(tables[name]), "batch", first, last, key_column="row_id"), str(tmp_path))
    assert sorted(read_table(window.train_uri)["batch"].unique()) == batches
    summary = ValidationService().validate(ValidationConfig(window.train_uri, str(SUITES / f"{name}.json"),
                                                            allowed_root=str(tmp_path))).summary
    assert summary["success"] is True and summary["rows"] == window.train_rows


@pytest.mark.parametrize("name, column, bad", [
    ("digits", "px_10", 17.0), ("digits", "digit", 11), ("diabetes", "progression", 900.0),
    ("diabetes", "sex", 3.0),
])
def test_suite_rejects_a_broken_batch(tables, tmp_path, name, column, bad):
    df = pd.read_parquet(tables[name]).iloc[:100].copy()
    df.loc[5, column] = bad
    path = tmp_path / f"{name}.parquet"
    df.to_parquet(path, index=False)
    summary = ValidationService().validate(ValidationConfig(str(path), str(SUITES / f"{name}.json"),
                                                            allowed_root=str(tmp_path))).summary
    assert summary["success"] is False
    assert {f["column"] for f in summary["failures"]} == {column}
