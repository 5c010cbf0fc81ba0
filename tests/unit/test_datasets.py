"""Windows cut from a table: inclusive bounds, deterministic holdout, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.datasets import WindowSpec, cut_window, read_table
from airflow_mlops.exceptions import MlopsConfigurationError, StorageError


@pytest.fixture
def source(tmp_path):
    df = pd.DataFrame({
        "day": range(100),
        "date": pd.date_range("2000-01-01", periods=100, freq="D").strftime("%Y-%m-%d"),
        "x": [float(i) for i in range(100)],
        "y": [i % 2 for i in range(100)],
    })
    path = tmp_path / "src.parquet"
    df.to_parquet(path, index=False)
    return str(path)


def test_cut_window_inclusive_and_deterministic(source, tmp_path):
    spec = WindowSpec(source, "date", "2000-01-11", "2000-02-29", key_column="day", holdout_fraction=0.25, min_rows=1)
    first = cut_window(spec, str(tmp_path / "a"))
    second = cut_window(spec, str(tmp_path / "b"))
    assert first.rows == 50 and first.train_rows + first.holdout_rows == 50
    assert 0 < first.holdout_rows < 25
    train = read_table(first.train_uri)
    holdout = read_table(first.holdout_uri)
    assert set(train.day).isdisjoint(holdout.day)
    assert train.date.min() >= "2000-01-11" and max(train.date.max(), holdout.date.max()) == "2000-02-29"
    assert first.train_digest == second.train_digest  # same rows, same bytes


def test_window_outside_source_is_explained(source, tmp_path):
    spec = WindowSpec(source, "date", "1990-01-01", "1990-12-31", min_rows=10)
    with pytest.raises(MlopsConfigurationError, match="too few rows.*2000-01-01 to 2000-04-09"):
        cut_window(spec, str(tmp_path))


def test_reversed_window_and_missing_source(tmp_path):
    with pytest.raises(MlopsConfigurationError, match="start is after its end"):
        WindowSpec("x.csv", "date", "2001-01-01", "2000-01-01")
    with pytest.raises(StorageError, match="make data"):
        cut_window(WindowSpec(str(tmp_path / "none.parquet"), "date", "a", "b"), str(tmp_path))
