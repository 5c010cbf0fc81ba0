"""Windows cut from a table: typed inclusive bounds (never text), deterministic holdout, clear errors."""

from __future__ import annotations

import pandas as pd
import pytest

from airflow_mlops.datasets import WindowSpec, cut_window, read_table, typed_bounds, window_file_name
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


@pytest.fixture
def batches(tmp_path):
    """12 numeric batches of 5 rows: as text, '10' < '2' and '1' <= '11' <= '9'."""
    df = pd.DataFrame({"batch": [b for b in range(1, 13) for _ in range(5)], "row_id": range(60),
                       "x": [float(i) for i in range(60)]})
    path = tmp_path / "batches.parquet"
    df.to_parquet(path, index=False)
    return str(path)


@pytest.mark.parametrize("bounds", [("2", "10"), (2, 10), ("2.0", "10")])
def test_numeric_window_compares_numbers(batches, tmp_path, bounds):
    spec = WindowSpec(batches, "batch", *bounds, key_column="row_id", holdout_fraction=0.0)
    result = cut_window(spec, str(tmp_path / "out"))
    assert result.rows == 45
    assert sorted(read_table(result.train_uri).batch.unique()) == list(range(2, 11))


def test_numeric_window_does_not_return_every_batch(batches, tmp_path):
    result = cut_window(WindowSpec(batches, "batch", "1", "9", holdout_fraction=0.0), str(tmp_path / "out"))
    assert sorted(read_table(result.train_uri).batch.unique()) == list(range(1, 10))
    assert result.rows == 45
    half = cut_window(WindowSpec(batches, "batch", "2.5", "4", holdout_fraction=0.0), str(tmp_path / "half"))
    assert sorted(read_table(half.train_uri).batch.unique()) == [3, 4]


def test_numeric_window_bad_bound_and_reversed_bounds(batches, tmp_path):
    with pytest.raises(MlopsConfigurationError, match=r"numeric time column 'batch' \(dtype int64\).*'2000-01-01'"):
        cut_window(WindowSpec(batches, "batch", "2000-01-01", "2000-02-01"), str(tmp_path))
    with pytest.raises(MlopsConfigurationError, match="start is after its end"):
        WindowSpec(batches, "batch", "10", "2")  # 10 > 2 as numbers, although '10' < '2' as text
    with pytest.raises(MlopsConfigurationError, match="time_type"):
        WindowSpec(batches, "batch", "1", "2", time_type="text")
    with pytest.raises(MlopsConfigurationError, match="too few rows.*'batch' covers 1 to 12"):
        cut_window(WindowSpec(batches, "batch", 20, 30, min_rows=5), str(tmp_path))


def test_date_objects_and_datetime64_columns(tmp_path):
    stamps = pd.date_range("2000-01-01 06:00", periods=40, freq="12h")
    df = pd.DataFrame({"ts": stamps, "day": stamps.date, "k": range(40)})
    path = tmp_path / "times.parquet"
    df.to_parquet(path, index=False)
    src = read_table(str(path))
    assert str(src.ts.dtype).startswith("datetime64") and src.day.dtype == object  # date32 reads as date objects
    by_ts = cut_window(WindowSpec(str(path), "ts", "2000-01-03", "2000-01-05", holdout_fraction=0.0),
                       str(tmp_path / "ts"))
    assert by_ts.rows == 6  # a date-only end covers its whole day: 3rd, 4th and 5th, two rows each
    by_day = cut_window(WindowSpec(str(path), "day", "2000-01-03", "2000-01-05", holdout_fraction=0.0),
                        str(tmp_path / "day"))
    assert by_day.rows == 6
    precise = cut_window(WindowSpec(str(path), "ts", "2000-01-03T06:00:00", "2000-01-03T06:00:00",
                                    holdout_fraction=0.0), str(tmp_path / "one"))
    assert precise.rows == 1
    assert precise.train_uri.rsplit("/", 1)[-1] == "train_2000-01-03T06_00_00_2000-01-03T06_00_00.csv"
    with pytest.raises(MlopsConfigurationError, match=r"date time column 'ts'.*'batch 7'"):
        cut_window(WindowSpec(str(path), "ts", "batch 7", "2000-01-05"), str(tmp_path / "bad"))
    with pytest.raises(MlopsConfigurationError, match=r"date time column 'ts'"):
        cut_window(WindowSpec(str(path), "ts", 3, 5), str(tmp_path / "bad"))


def test_iso_strings_compare_as_dates_not_text(tmp_path):
    # As text '2000-01-10T00:00' > '2000-01-10' and '2000-1-9' > '2000-01-10': typed, both are fine.
    values = pd.Series(["2000-01-09", "2000-01-10T00:00", "2000-01-10T18:30", "2000-01-11"], name="t")
    typed, lo, hi = typed_bounds(values, "2000-01-10", "2000-01-10")
    assert list((typed >= lo) & (typed <= hi)) == [False, True, True, False]
    older, start, _ = typed_bounds(values, "2000-01-10", None)
    assert list(older < start) == [True, False, False, False]
    with pytest.raises(MlopsConfigurationError, match="start is after its end.*date"):
        typed_bounds(values, "2000-01-11", "2000-01-10T12:00")
    with pytest.raises(MlopsConfigurationError, match="cannot be compared"):
        typed_bounds(pd.Series(["a", "2000-01-01"], name="t"), "2000-01-01", "2000-01-02")
    numeric_text = pd.Series(["1", "2", "10"], name="b")
    typed, lo, hi = typed_bounds(numeric_text, "2", "10", time_type="numeric")
    assert list((typed >= lo) & (typed <= hi)) == [False, True, True]
    with pytest.raises(MlopsConfigurationError, match="cannot be compared"):
        typed_bounds(pd.Series([1, 2], name="b"), "2000-01-01", "2000-01-02", time_type="date")


def test_window_file_names_are_safe():
    assert window_file_name("2000-01-01", "2000-01-31") == "2000-01-01_2000-01-31"
    assert window_file_name("../../etc", "a b/c:d") == "etc_a_b_c_d"
    assert window_file_name(2, 10.5) == "2_10.5"
