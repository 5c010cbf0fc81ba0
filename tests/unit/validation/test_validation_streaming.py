"""Streaming validation: chunk by chunk, the same verdicts, counts and messages as the whole table in memory."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlops_bad_inputs import KINDS, make

from airflow_mlops.exceptions import DataValidationError, MlopsConfigurationError
from airflow_mlops.validation import SuiteError, ValidationConfig, ValidationService
from airflow_mlops.validation.batches import DataFormat
from airflow_mlops.validation.chunks import csv_dtypes, iter_frames, unify_dtypes
from airflow_mlops.validation.streaming import (
    DistinctSpill,
    OrderStatistics,
    median_from,
    quantile_from,
    streaming_plan,
    validate_stream,
)
from mlops_testkit.tables import MIXED_SUITE, e, mixed_frame

FIXED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def same(a, b) -> bool:
    """Equal, floats to 12 significant digits (a streamed mean sums chunk by chunk)."""
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=1e-15)
        except (TypeError, ValueError):
            return str(a) == str(b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def run_both(path: Path, suite_path: Path, chunk_rows: int = 7):
    service = ValidationService(clock=lambda: FIXED)
    memory = service.validate(ValidationConfig(str(path), str(suite_path), allowed_root=str(path.parent)))
    stream = service.validate(ValidationConfig(str(path), str(suite_path), engine="streaming", chunk_rows=chunk_rows, allowed_root=str(path.parent)))
    return memory, stream


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_streamed_summary_equals_the_in_memory_one(tmp_path, fmt):
    path = tmp_path / f"batch.{fmt}"
    df = mixed_frame()
    df.to_parquet(path) if fmt == "parquet" else df.to_csv(path, index=False)
    suite_path = tmp_path / "suite.json"
    suite_path.write_text(json.dumps(MIXED_SUITE))

    memory, stream = run_both(path, suite_path)

    m, s = memory.summary, stream.summary
    assert (m["engine"], s["engine"]) == ("pandas", "streaming")
    for key in ("success", "evaluated", "failed", "warned", "unexpected_counts", "digest", "rows", "columns",
                "schema", "data_uri", "suite", "suite_digest"):
        assert m[key] == s[key], key
    assert m["failed"] >= 15 and m["unexpected_counts"]["expect_column_values_to_be_unique(id)"] == 9
    assert len(m["failures"]) == len(s["failures"])
    for a, b in zip(m["failures"], s["failures"], strict=True):
        assert same(a, b), (a, b)
    # GX's whole result too, expectation by expectation, in GX's order.
    for a, b in zip(memory.result_json()["results"], stream.result_json()["results"], strict=True):
        assert a["expectation_config"]["type"] == b["expectation_config"]["type"]
        assert a["success"] == b["success"]
        got = {k: v for k, v in b["result"].items() if k != "partial_unexpected_index_list"}
        want = {k: v for k, v in a["result"].items() if k != "partial_unexpected_index_list"}
        assert same(want, got), (a["expectation_config"]["type"], want, got)


def test_a_decrease_and_a_duplicate_across_chunk_borders_are_found(tmp_path):
    df = pd.DataFrame({"t": [1.0, 2.0, np.nan, 3.0, 2.5, 4.0, 4.0], "u": [1, 2, 3, 4, 5, 6, 1]})
    path = tmp_path / "b.parquet"
    df.to_parquet(path)
    suite = {"name": "s", "expectations": [e("expect_column_values_to_be_increasing", column="t", strictly=True),
                                           e("expect_column_values_to_be_unique", column="u")]}
    for chunk_rows in (1, 2, 3, 4, 100):
        run = validate_stream(str(path), suite, DataFormat.PARQUET, chunk_rows=chunk_rows)
        by_type = {r.expectation_config.type: r.result for r in run.result.results}
        assert by_type["expect_column_values_to_be_increasing"]["unexpected_count"] == 2, chunk_rows
        assert by_type["expect_column_values_to_be_increasing"]["partial_unexpected_list"] == [2.5, 4.0]
        assert by_type["expect_column_values_to_be_unique"]["partial_unexpected_list"] == [1, 1]


def test_every_bad_input_gives_the_in_memory_error_and_message(window, tmp_path, suite_path):
    for kind in sorted(KINDS):
        root = tmp_path / kind
        path = make(kind, window, root / "batches")
        messages = {}
        for engine in ("pandas", "streaming"):
            config = ValidationConfig(str(path), suite_path, quarantine_root=str(root / "q" / engine),
                                      allowed_root=str(root / "batches"), engine=engine, chunk_rows=7)
            with pytest.raises((DataValidationError, MlopsConfigurationError)) as err:
                ValidationService(clock=lambda: FIXED).validate(config).raise_for_failure()
            message = str(err.value).replace(f"/q/{engine}/", "/q/ENGINE/")
            if kind == "damaged_parquet":  # pyarrow names its source: '<Buffer>' in memory, nothing for a file
                message = message.replace("Could not open Parquet input source '<Buffer>': ", "")
            messages[engine] = (type(err.value), message)
        assert messages["pandas"] == messages["streaming"], kind
        copies = sorted(p.name for p in (root / "q").rglob("*") if p.is_file())
        assert copies[0::2] == copies[1::2]  # both engines quarantined the same files


def test_streaming_plan_says_what_each_expectation_costs():
    plan = streaming_plan(MIXED_SUITE)
    assert plan["expect_column_values_to_be_between"] == "rows"
    assert plan["expect_table_columns_to_match_ordered_list"] == "schema"
    assert plan["expect_column_values_to_be_unique"] == "distinct"
    assert plan["expect_column_quantile_values_to_be_between"] == "order"
    assert plan["expect_column_stdev_to_be_between"] == "moments"
    assert plan["expect_column_values_to_be_increasing"] == "sequence"
    assert plan["expect_table_row_count_to_be_between"] == "count"


def test_an_expectation_without_a_streaming_plan_is_refused_with_the_alternatives():
    suite = {"name": "s", "expectations": [e("expect_column_distinct_values_to_be_in_set", column="k",
                                             value_set=[1, 2])]}
    with pytest.raises(SuiteError, match="cannot be computed chunk by chunk.*engine='pandas'.*engine='spark'"):
        streaming_plan(suite)


@pytest.mark.parametrize("interpolation", ["nearest", "linear", "lower", "higher", "midpoint"])
def test_exact_quantiles_from_two_passes_equal_pandas(interpolation):
    rng = np.random.default_rng(3)
    values = pd.Series(np.r_[rng.normal(0, 1, 4000), rng.integers(-3, 3, 1001)].astype("float64"))
    chunks = np.array_split(values, 17)
    acc = OrderStatistics()
    for c in chunks:
        acc.first_pass(c)
    qs = [0.0, 0.01, 0.25, 0.5, 0.731, 0.99, 1.0]
    from airflow_mlops.validation.streaming import _positions

    for q in qs:
        lo, hi, _ = _positions(acc.n, q, interpolation)
        acc.need({lo, hi})
    acc.need({(acc.n - 1) // 2, acc.n // 2})
    acc.plan_second_pass()
    for c in chunks:
        acc.second_pass(c)
    stats = acc.resolve()
    assert stats is not None
    got = [quantile_from(stats, acc.n, q, interpolation, values.dtype) for q in qs]
    assert got == values.quantile(qs, interpolation=interpolation).tolist()
    assert median_from(stats, acc.n) == values.median()


def test_a_bracket_that_misses_is_reported_so_the_caller_reads_again():
    acc = OrderStatistics()
    acc.first_pass(pd.Series(np.arange(1000.0)))
    acc.need({10})
    acc.plan_second_pass()
    acc.second_pass(pd.Series(np.arange(500.0, 1000.0)))  # a different column than the first pass saw
    assert acc.resolve() is None


def test_distinct_spill_counts_exactly_across_partitions(tmp_path):
    spill = DistinctSpill(str(tmp_path / "s"), partitions=4)
    spill.add(pd.Series([0.0, 1.5, np.nan, 2.0]), 0)
    spill.add(pd.Series([-0.0, 3.0, 1.5, 7.0]), 4)
    distinct, duplicated, first = spill.resolve(examples=3)
    assert (distinct, duplicated) == (5, 4)
    assert first == [0.0, 1.5, -0.0]  # row order: rows 0, 1, 4
    assert not list((tmp_path / "s").iterdir())


def test_csv_chunks_get_the_dtypes_of_the_whole_file(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [1, 2, 3, None, 5, 6], "b": ["x", "1", "y", "z", "w", "v"], "c": [1, 2, 3, 4, 5, 6],
                  "d": [True, False, True, True, None, False]}).to_csv(path, index=False)
    whole = pd.read_csv(path)
    types = csv_dtypes(str(path), 2)
    assert {k: str(v) for k, v in types.items()} == {k: str(v) for k, v in whole.dtypes.items()}
    chunks = list(iter_frames(str(path), DataFormat.CSV, 2, csv_dtypes=types))
    assert len(chunks) == 3
    pd.testing.assert_frame_equal(pd.concat(chunks), whole)
    assert str(unify_dtypes([np.dtype("int64"), np.dtype("float64")])) == "float64"
    assert unify_dtypes([np.dtype("bool"), np.dtype("float64")]) == np.dtype(object)


def test_an_empty_table_streams_like_it_validates_in_memory(tmp_path):
    path = tmp_path / "empty.parquet"
    mixed_frame().iloc[:0].to_parquet(path)
    suite_path = tmp_path / "suite.json"
    suite_path.write_text(json.dumps(MIXED_SUITE))
    memory, stream = run_both(path, suite_path)
    assert memory.summary["failures"] == stream.summary["failures"]
    assert memory.summary["rows"] == stream.summary["rows"] == 0


def test_chunks_never_exceed_chunk_rows(tmp_path):
    path = tmp_path / "b.parquet"
    mixed_frame(1000).to_parquet(path, row_group_size=600)
    seen = []
    suite = {"name": "s", "expectations": [e("expect_column_values_to_not_be_null", column="x")]}
    run = validate_stream(str(path), suite, DataFormat.PARQUET, chunk_rows=128,
                          on_chunk=lambda i, rows: seen.append(rows))
    sizes = np.diff([0, *seen])
    assert run.rows == 1000 and sizes.max() <= 128 and run.chunks == len(seen) > 1


def test_engine_must_be_known(tmp_path):
    with pytest.raises(MlopsConfigurationError, match="Unknown engine"):
        ValidationConfig("b.csv", "s.json", engine="dask")
    with pytest.raises(MlopsConfigurationError, match="chunk_rows"):
        ValidationConfig("b.csv", "s.json", chunk_rows=0)
