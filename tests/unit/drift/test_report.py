"""Drift with Evidently 0.7 in full, sample and profile modes, on small seeded frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.drift.profile import ReferenceProfile, build_profile, profile_drift
from airflow_mlops.drift.report import (
    DriftConfig,
    DriftMode,
    default_method,
    detect_drift,
    is_drift,
    short_method,
)
from airflow_mlops.exceptions import DriftError, MlopsConfigurationError
from airflow_mlops.hooks.storage import LocalStorage


def frame(n: int, seed: int, shift: float = 0.0, pred_shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "a": rng.normal(shift, 1, n),
        "b": rng.normal(0, 1, n),
        "c": rng.normal(shift, 1, n),
        "kind": rng.choice(["x", "y", "z"], n, p=[0.5, 0.3, 0.2]),
        "prediction": np.clip(rng.normal(0.3 + pred_shift, 0.1, n), 0, 1),
    })


@pytest.fixture(scope="module")
def windows() -> dict[str, pd.DataFrame]:
    return {"ref": frame(1500, 0), "same": frame(600, 1), "shifted": frame(600, 2, shift=1.0, pred_shift=0.2)}


CONFIG = DriftConfig(prediction_column="prediction", drift_share=0.5)


def test_full_mode_finds_the_shift_with_evidently(windows):
    result = detect_drift(windows["ref"], windows["shifted"], CONFIG)
    s = result.summary
    assert s.engine == "evidently"
    assert s.drifted_columns == ["a", "c"]
    assert s.drift_share == pytest.approx(0.5) and s.data_drift
    assert s.prediction_drift is True
    assert {c.method for c in s.columns} == {"wasserstein", "jensenshannon"}  # reference > 1000 rows
    assert s.signals() == {"data_drift", "prediction_drift"}
    assert "<html" in result.html.lower()
    assert json.loads(result.evidently_json)["metrics"]
    compact = s.compact()
    assert len(json.dumps(compact)) < 1500
    assert compact["drifted_columns"] == ["a", "c"] and compact["prediction_drift"] is True


def test_full_mode_quiet_window(windows):
    s = detect_drift(windows["ref"], windows["same"], CONFIG, render=False).summary
    assert s.drifted_columns == [] and not s.data_drift and s.prediction_drift is False
    assert s.signals() == set()


@pytest.mark.parametrize("which", ["same", "shifted"])
def test_profile_and_sample_modes_agree_with_full(windows, which):
    full = detect_drift(windows["ref"], windows[which], CONFIG, render=False).summary
    for mode in (DriftMode.SAMPLE, DriftMode.PROFILE):
        config = DriftConfig(prediction_column="prediction", mode=mode, sample_size=1200, profile_points=500)
        other = detect_drift(windows["ref"], windows[which], config, render=False).summary
        assert other.verdicts() == full.verdicts(), mode
        assert other.prediction_drift == full.prediction_drift, mode
        # The sample pins the tests the full windows get (Wasserstein), although it holds fewer rows.
        assert [c.method for c in other.columns] == [c.method for c in full.columns], mode


def test_profile_scores_match_evidently_when_the_reference_is_kept_whole(windows):
    ref = windows["ref"].iloc[:800]  # <= 1000 rows: Evidently uses K-S and the profile keeps every value
    full = detect_drift(ref, windows["shifted"], CONFIG, render=False).summary
    prof = detect_drift(ref, windows["shifted"], DriftConfig(prediction_column="prediction", mode="profile"),
                        render=False).summary
    assert [c.method for c in full.columns] == ["ks", "ks", "ks", "chisquare"]
    for a, b in zip(full.columns, prof.columns, strict=True):
        assert b.score == pytest.approx(a.score, rel=1e-6, abs=1e-12), a.column


def test_profile_round_trips_through_storage(windows, tmp_path):
    config = DriftConfig(prediction_column="prediction", profile_points=500)
    profile = build_profile(windows["ref"], config, digest="sha256:abc")
    uri = str(tmp_path / "profile.json")
    profile.save(LocalStorage(), uri)
    loaded = ReferenceProfile.load(LocalStorage(), uri)
    assert loaded.digest == "sha256:abc" and loaded.rows == 1500
    assert not loaded.columns["a"].exact and len(loaded.columns["a"].values) == 500
    a = profile_drift(profile, windows["shifted"], config)
    b = profile_drift(loaded, windows["shifted"], config)
    assert a.verdicts() == b.verdicts()


def test_schema_change_is_reported(windows):
    cur = windows["same"].drop(columns=["b"]).assign(extra=1.0)
    for mode in ("full", "profile"):
        s = detect_drift(windows["ref"], cur, DriftConfig(prediction_column="prediction", mode=mode),
                         render=False).summary
        assert s.schema.missing == ("b",) and s.schema.added == ("extra",)
        assert "schema_change" in s.signals()
        assert "b" not in s.verdicts()


def test_missing_prediction_column_is_explained(windows):
    with pytest.raises(DriftError, match="prediction column is missing"):
        detect_drift(windows["ref"], windows["same"].drop(columns=["prediction"]), CONFIG)


def test_profile_mode_refuses_tests_it_cannot_run(windows):
    with pytest.raises(MlopsConfigurationError, match="cannot run against a reference profile"):
        detect_drift(windows["ref"], windows["same"], DriftConfig(mode="profile", method="psi"))


@pytest.mark.parametrize(
    ("kind", "rows", "n_unique", "method"),
    [("numerical", 500, 100, "ks"), ("numerical", 5000, 100, "wasserstein"), ("numerical", 500, 2, "z"),
     ("numerical", 500, 4, "chisquare"), ("numerical", 5000, 4, "jensenshannon"), ("categorical", 500, 3, "chisquare"),
     ("categorical", 5000, 3, "jensenshannon")],
)
def test_default_method_follows_evidently(kind, rows, n_unique, method):
    assert default_method(kind, rows, n_unique) == method


@pytest.mark.parametrize(
    ("method", "score", "threshold", "drift"),
    [("ks", 0.05, 0.05, True), ("ks", 0.2, 0.05, False), ("chisquare", 0.05, 0.05, False),
     ("wasserstein", 0.1, 0.1, True), ("wasserstein", 0.09, 0.1, False), ("jensenshannon", float("nan"), 0.1, False)],
)
def test_verdict_direction(method, score, threshold, drift):
    assert is_drift(method, score, threshold) is drift


def test_method_names():
    assert short_method("Wasserstein distance (normed)") == "wasserstein"
    assert short_method("K-S p_value") == "ks"
    with pytest.raises(MlopsConfigurationError):
        DriftConfig(mode="sometimes")
