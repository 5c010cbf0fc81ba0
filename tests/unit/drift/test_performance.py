"""Performance monitoring with delayed labels: the drop against the champion's evaluation metric."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_mlops.drift.performance import PerformanceConfig, assess
from airflow_mlops.exceptions import DriftError, MlopsConfigurationError

RNG = np.random.default_rng(0)
Y = RNG.integers(0, 2, 400)
GOOD = np.clip(Y * 0.6 + RNG.normal(0.2, 0.2, 400), 0, 1)  # AUC about 0.95
NOISE = RNG.uniform(size=400)  # AUC about 0.5


@pytest.mark.parametrize(
    ("prob", "baseline", "config", "degraded", "reason_part"),
    [
        (GOOD, {"auc": 0.95}, PerformanceConfig(max_drop=0.1), False, "drop"),
        (NOISE, {"auc": 0.95}, PerformanceConfig(max_drop=0.1), True, "auc dropped"),
        (NOISE, {"auc": 0.55}, PerformanceConfig(max_drop=0.1), False, "auc"),
        (NOISE, None, PerformanceConfig(), False, "no baseline"),
        (GOOD, {"log_loss": 0.05}, PerformanceConfig(metric="log_loss", max_drop=0.1), True, "log_loss dropped"),
        (GOOD, {"auc": 0.95, "positive_rate": 0.2}, PerformanceConfig(max_label_shift=0.2), True, "positive rate"),
        (GOOD[:20], {"auc": 0.99}, PerformanceConfig(min_rows=30), False, "no verdict"),
    ],
)
def test_performance_table(prob, baseline, config, degraded, reason_part):
    result = assess(Y[: len(prob)], prob, baseline, config)
    assert result.degraded is degraded
    assert reason_part in result.reason
    assert result.rows == len(prob)


def test_drop_is_baseline_minus_value_for_auc():
    result = assess(Y, NOISE, {"auc": 0.9})
    assert result.drop == pytest.approx(0.9 - result.value)
    assert result.to_dict()["metric"] == "auc"


def test_empty_window_is_an_error():
    with pytest.raises(DriftError, match="No labelled rows"):
        assess(np.array([]), np.array([]), {"auc": 0.9})


@pytest.mark.parametrize("bad", [{"max_drop": -0.1}, {"metric": ""}, {"max_label_shift": 2.0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(MlopsConfigurationError):
        PerformanceConfig(**bad)
