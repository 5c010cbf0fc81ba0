"""Drift at scale: profiles from one streaming pass (mergeable sketches) or from Spark, the in-memory verdicts."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.drift.profile import build_profile
from airflow_mlops.drift.report import DriftConfig, detect_drift
from airflow_mlops.drift.scale import detect_drift_files, profile_window
from airflow_mlops.drift.streaming import ColumnSketch, profile_frames
from airflow_mlops.exceptions import MlopsConfigurationError

SHIFTED = ["a", "d", "e"]


def window(n: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "a": rng.normal(shift, 1, n),
        "b": rng.normal(0, 1, n),
        "c": rng.integers(0, 4, n),
        "d": np.array(["x", "y", "z"], dtype=object)[rng.integers(0, 2 if shift else 3, n)],
        "e": rng.exponential(1 + shift, n),
        "id": np.arange(n),
    })


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("windows")
    ref, cur = window(30_000, 0.0, 1), window(12_000, 0.3, 2)
    ref.to_parquet(folder / "ref.parquet", row_group_size=4_000)
    cur.to_parquet(folder / "cur.parquet", row_group_size=4_000)
    cur.to_csv(folder / "cur.csv", index=False)
    return ref, cur, folder


CONFIG = DriftConfig(mode="profile", exclude=["id"])


def test_a_streamed_profile_is_the_in_memory_one_when_the_window_is_small():
    df = window(1_500, 0.0, 3)
    config = DriftConfig(mode="profile", profile_points=2_000)
    streamed = profile_frames(np.array_split(df, 7), config).profile
    whole = build_profile(df, config)
    assert streamed.rows == whole.rows and streamed.columns.keys() == whole.columns.keys()
    for name, want in whole.columns.items():
        got = streamed.columns[name]
        assert (got.kind, got.rows, got.exact, got.counts, got.uniques, got.integer) == (
            want.kind, want.rows, want.exact, want.counts, want.uniques, want.integer), name
        assert got.values == want.values and math.isclose(got.std, want.std, rel_tol=1e-12)
        assert got.n_unique == want.n_unique or (got.n_unique > 20 and want.n_unique > 20)


def test_sketches_merge_like_one_pass():
    values = pd.Series(np.random.default_rng(4).normal(size=20_000))
    one, left, right = (ColumnSketch("numerical", False, 2_000) for _ in range(3))
    one.add(values)
    left.add(values[:7_000])
    right.add(values[7_000:])
    left.merge(right)
    a, b = one.profile(), left.profile()
    assert a.rows == b.rows == 20_000 and math.isclose(a.std, b.std, rel_tol=1e-12)
    assert not a.exact and not b.exact
    # KLL: both are within the sketch's rank error of the true quantiles.
    truth = np.quantile(values, (np.arange(2_000) + 0.5) / 2_000)
    for got in (a.values, b.values):
        ranks = np.searchsorted(np.sort(values), got) / len(values)
        assert np.max(np.abs(ranks - (np.arange(2_000) + 0.5) / 2_000)) < 0.005
    inner = slice(20, -20)  # away from the sparse tails, values are close as well as ranks
    assert np.max(np.abs(np.asarray(a.values)[inner] - truth[inner])) < 0.05


@pytest.mark.parametrize("current", ["cur.parquet", "cur.csv"])
def test_streaming_gives_the_in_memory_verdicts(windows, current):
    ref, cur, folder = windows
    full = detect_drift(ref, cur, DriftConfig(exclude=["id"]), render=False).summary
    in_memory = detect_drift(ref, cur, CONFIG, render=False).summary
    result, profile = detect_drift_files(str(folder / "ref.parquet"), str(folder / current), CONFIG,
                                         "streaming", chunk_rows=2_500)
    streamed = result.summary
    assert streamed.engine == "streaming" and streamed.current_rows == len(cur) and profile.rows == len(ref)
    assert streamed.verdicts() == in_memory.verdicts() == full.verdicts()
    assert sorted(streamed.drifted_columns) == SHIFTED
    for a, b in zip(streamed.columns, full.columns, strict=True):
        assert a.method == b.method
        assert abs(a.score - b.score) < 0.01 * max(1.0, abs(b.score)), (a, b)
    assert "DRIFT" in result.html


def test_a_cached_reference_profile_is_reused_and_a_schema_change_reported(windows, tmp_path):
    ref, cur, folder = windows
    profile = profile_window(str(folder / "ref.parquet"), CONFIG).profile
    cached = type(profile).from_json(profile.to_json())
    changed = cur.drop(columns=["b"]).assign(f=1.0)
    changed.to_parquet(tmp_path / "changed.parquet")
    result, again = detect_drift_files("unused", str(tmp_path / "changed.parquet"), CONFIG, profile=cached)
    assert again is cached
    assert result.summary.schema.missing == ("b",) and result.summary.schema.added == ("f",)
    assert "schema_change" in result.summary.signals()


def test_the_operator_streams_both_windows_and_caches_the_profile(windows, tmp_path):
    from airflow_mlops.operators.drift import DriftDetectionOperator

    _, _, folder = windows
    cache = tmp_path / "profile.json"
    op = DriftDetectionOperator(task_id="d", reference_uri=str(folder / "ref.parquet"),
                                current_uri=str(folder / "cur.parquet"), feature_columns=["a", "b", "c", "d", "e"],
                                drift_config={"mode": "profile"}, profile_uri=str(cache), engine="streaming",
                                allowed_root="/")
    first = op.execute({})
    assert sorted(first["drifted_columns"]) == SHIFTED and cache.exists()
    stamp = json.loads(cache.read_text())["created"]
    second = op.execute({})
    assert second["drifted_columns"] == first["drifted_columns"]
    assert json.loads(cache.read_text())["created"] == stamp  # reused, not rebuilt


def test_spark_cannot_score_with_a_model():
    with pytest.raises(MlopsConfigurationError, match="cannot score windows"):
        profile_window("t.parquet", CONFIG, "spark", transform=lambda df: df)


@pytest.mark.spark
def test_spark_profiles_give_the_in_memory_verdicts(spark, windows):
    from airflow_mlops.drift.spark import profile_spark

    ref, cur, folder = windows
    small = DriftConfig(mode="profile", exclude=["id"], columns=["a", "c", "d"])
    built = profile_spark(spark.read.parquet(str(folder / "ref.parquet")), small).profile
    whole = build_profile(ref, small)
    for name, want in whole.columns.items():
        got = built.columns[name]
        assert (got.kind, got.rows, got.counts, got.integer) == (want.kind, want.rows, want.counts, want.integer)
        assert math.isclose(got.std, want.std, rel_tol=1e-9)
    result, _ = detect_drift_files(str(folder / "ref.parquet"), str(folder / "cur.parquet"), small, "spark")
    assert result.summary.engine == "spark"
    assert result.summary.verdicts() == detect_drift(ref, cur, small, render=False).summary.verdicts()
    assert sorted(result.summary.drifted_columns) == ["a", "d"]
