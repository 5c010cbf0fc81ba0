"""Data and prediction drift with Evidently 0.7 (Report + DataDriftPreset), its modes, and the compact summary."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any

# The shared types live in drift.base; they are re-exported here, where callers have always found them.
from airflow_mlops.drift.base import (
    DEFAULT_THRESHOLDS,
    INTEGER_CARDINALITY_LIMIT,
    METHOD_NAMES,
    P_VALUE_METHODS,
    ColumnDrift,
    DriftConfig,
    DriftMode,
    DriftResult,
    DriftSummary,
    SchemaDiff,
    column_kind,
    default_method,
    is_drift,
    schema_diff,
    short_method,
    summary_html,
    test_kind,
    tested_columns,
)
from airflow_mlops.drift.profile import ReferenceProfile, build_profile, profile_drift
from airflow_mlops.exceptions import DriftError, explain

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DEFAULT_THRESHOLDS", "INTEGER_CARDINALITY_LIMIT", "METHOD_NAMES", "P_VALUE_METHODS", "ColumnDrift",
    "DriftConfig", "DriftMode", "DriftResult", "DriftSummary", "ReferenceProfile", "SchemaDiff", "column_kind",
    "default_method", "detect_drift", "is_drift", "parse_snapshot", "run_evidently", "sample_frame",
    "schema_diff", "short_method", "summary_html", "test_kind", "tested_columns",
]


# --- prediction column and sampling -----------------------------------------------------------------------------


def _check_prediction(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig) -> None:
    col = config.prediction_column
    if col and (col not in reference.columns or col not in current.columns):
        raise DriftError(
            explain("The prediction column is missing", expected=f"column {col!r} in both windows",
                    received={"reference": col in reference.columns, "current": col in current.columns},
                    hint="score both windows with the champion first, or set prediction_column=None.")
        )


def sample_frame(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of ``n`` rows without replacement; smaller frames are returned whole."""
    if len(df) <= n:
        return df
    return df.sample(n=n, random_state=seed)


# --- the entry point --------------------------------------------------------------------------------------------


def detect_drift(
    reference: pd.DataFrame | None,
    current: pd.DataFrame,
    config: DriftConfig | None = None,
    profile: ReferenceProfile | None = None,
    render: bool = True,
) -> DriftResult:
    """Test ``current`` against ``reference`` (or, in ``profile`` mode, against ``profile``)."""
    config = config or DriftConfig()
    if len(current) == 0:
        raise DriftError(explain("The current window is empty", expected="at least one row", received=0))
    if config.mode is DriftMode.PROFILE:
        if profile is None:
            if reference is None:
                raise DriftError(explain("Profile mode needs a profile or a reference window",
                                         expected="profile= or reference=", received=None))
            profile = build_profile(reference, config)
        summary = profile_drift(profile, current, config)
        return DriftResult(summary, summary_html(summary) if render else "")
    if reference is None or len(reference) == 0:
        raise DriftError(explain("The reference window is empty", expected="at least one row",
                                 received=None if reference is None else 0))
    return run_evidently(reference, current, config, render=render)


def run_evidently(reference: pd.DataFrame, current: pd.DataFrame, config: DriftConfig,
                  render: bool = True) -> DriftResult:
    """Evidently's Report with the data drift preset (plus a ValueDrift of the prediction column)."""
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    started = time.perf_counter()
    _check_prediction(reference, current, config)
    kinds = {c: column_kind(reference[c]) for c in reference.columns if c not in config.exclude}
    schema = schema_diff({k: v for k, v in kinds.items() if k != config.prediction_column}, current.drop(
        columns=[config.prediction_column] if config.prediction_column else []), config.columns, config.exclude)
    columns = tested_columns(kinds, current, config)
    if not columns:
        raise DriftError(explain("No column to test for drift", expected="columns shared by both windows",
                                 received={"reference": sorted(reference.columns), "current": sorted(current.columns)}))
    used = columns + ([config.prediction_column] if config.prediction_column else [])
    tkinds = {c: test_kind(reference[c], kinds[c]) for c in used}
    per_method = {c: config.method_for(c) for c in used if config.method_for(c)}
    ref, cur = reference[used], current[used]
    if config.mode is DriftMode.SAMPLE:
        # Sampling below 1000 reference rows would switch Evidently from Wasserstein to K-S: pin the test that
        # the full windows get, so the sample answers the same question.
        for c in used:
            if c not in per_method:
                n_unique = int(pd.concat([ref[c], cur[c]], ignore_index=True).nunique())
                per_method[c] = default_method(tkinds[c], len(ref), n_unique)
        ref = sample_frame(ref, config.sample_size, config.seed)
        cur = sample_frame(cur, config.sample_size, config.seed + 1)
    numerical = [c for c in used if tkinds[c] == "numerical"]
    categorical = [c for c in used if tkinds[c] == "categorical"]
    definition = DataDefinition(numerical_columns=numerical, categorical_columns=categorical)
    feature_thresholds = {c: float(t) for c, t in config.per_column_threshold.items() if c in columns}
    preset = DataDriftPreset(
        columns=columns,
        drift_share=config.drift_share,
        per_column_method={c: per_method[c] for c in columns if c in per_method} or None,
        threshold=config.threshold,
        per_column_threshold=feature_thresholds or None,
    )
    metrics: list[Any] = [preset]
    if config.prediction_column:
        method = per_method.get(config.prediction_column)
        metrics.append(ValueDrift(column=config.prediction_column, method=method,
                                  threshold=config.threshold_for(config.prediction_column, method)
                                  if method else config.prediction_threshold))
    report = Report(metrics=metrics, include_tests=True)
    snapshot = report.run(current_data=Dataset.from_pandas(cur, data_definition=definition),
                          reference_data=Dataset.from_pandas(ref, data_definition=definition))
    results = parse_snapshot(snapshot.dict(), tkinds)
    feature_results = tuple(results[c] for c in columns if c in results)
    share = sum(c.drifted for c in feature_results) / len(feature_results) if feature_results else 0.0
    summary = DriftSummary(
        mode=config.mode.value,
        reference_rows=len(reference),
        current_rows=len(current),
        rows_tested=(len(ref), len(cur)),
        columns=feature_results,
        drift_share=share,
        drift_share_threshold=config.drift_share,
        data_drift=share >= config.drift_share,
        prediction=results.get(config.prediction_column) if config.prediction_column else None,
        schema=schema,
        seconds=time.perf_counter() - started,
    )
    if not render:
        return DriftResult(summary, "")
    return DriftResult(summary, snapshot.get_html_str(as_iframe=False), snapshot.json())


def parse_snapshot(data: dict[str, Any], kinds: dict[str, str]) -> dict[str, ColumnDrift]:
    """Per-column results of a Snapshot's ``dict()``: score and test from the ValueDrift metrics, verdict from
    their tests (FAIL means drift)."""
    status: dict[str, str] = {}
    for test in data.get("tests") or []:
        params = (test.get("metric_config") or {}).get("params") or {}
        if params.get("type", "").endswith(":ValueDrift") and "column" in params:
            raw = test.get("status", "")
            status[params["column"]] = str(getattr(raw, "value", raw)).upper().rsplit(".", 1)[-1]
    out: dict[str, ColumnDrift] = {}
    for metric in data.get("metrics") or []:
        cfg = metric.get("config") or {}
        if not str(cfg.get("type", "")).endswith(":ValueDrift"):
            continue
        column = cfg["column"]
        method = short_method(cfg.get("method")) or "unknown"
        threshold = float(cfg["threshold"]) if cfg.get("threshold") is not None else DEFAULT_THRESHOLDS.get(method, 0.05)
        value = metric.get("value")
        score = float(value) if isinstance(value, int | float) else math.nan
        drifted = status[column] == "FAIL" if column in status else is_drift(method, score, threshold)
        out[column] = ColumnDrift(column, kinds.get(column, "numerical"), method, threshold, score, drifted)
    return out
