"""Performance monitoring with delayed labels: the metric, its standard error, and the optional fixed drop."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_mlops.drift.performance import PerformanceConfig, assess, standard_error
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
        (NOISE, None, PerformanceConfig(max_drop=0.1), False, "no baseline"),
        # no fixed threshold (the default): the policy judges the value against the out-of-time baseline
        (NOISE, {"auc": 0.95}, PerformanceConfig(), False, "judged by the policy"),
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
    assert result.mode == "max" and 0.01 < result.standard_error < 0.05


def test_empty_window_is_an_error():
    with pytest.raises(DriftError, match="No labelled rows"):
        assess(np.array([]), np.array([]), {"auc": 0.9})


def _metric(task, metric, y, s):
    from sklearn import metrics as skm

    if task == "regression":
        return {"rmse": np.sqrt(np.mean((s - y) ** 2)), "mae": np.mean(np.abs(s - y)), "r2": skm.r2_score(y, s)}[metric]
    if task == "multiclass":
        pred = s.argmax(1)
        return {"accuracy": np.mean(pred == y), "macro_f1": skm.f1_score(y, pred, average="macro")}[metric]
    return {"auc": lambda: skm.roc_auc_score(y, s), "accuracy": lambda: np.mean((s >= 0.5) == y),
            "log_loss": lambda: skm.log_loss(y, s, labels=[0, 1]), "brier": lambda: np.mean((s - y) ** 2),
            "f1": lambda: skm.f1_score(y, s >= 0.5)}[metric]()


def _bootstrap_se(task, metric, y, scores, n=300):
    rng = np.random.default_rng(1)
    values = []
    for _ in range(n):
        idx = rng.integers(0, len(y), len(y))
        values.append(_metric(task, metric, y[idx], scores[idx]))
    return float(np.std(values))


REG_Y = RNG.normal(10, 3, 500)
REG_PRED = REG_Y + RNG.normal(0, 1.5, 500)
MC_Y = RNG.integers(0, 3, 500)
MC_P = np.clip(np.eye(3)[MC_Y] * 0.5 + RNG.uniform(size=(500, 3)), 1e-3, None)
MC_P = MC_P / MC_P.sum(1, keepdims=True)


@pytest.mark.parametrize(
    ("task", "metric", "y", "scores"),
    [
        ("binary", "auc", Y, GOOD),
        ("binary", "auc", Y, NOISE),
        ("binary", "accuracy", Y, GOOD),
        ("binary", "log_loss", Y, GOOD),
        ("binary", "brier", Y, NOISE),
        ("binary", "f1", Y, GOOD),  # bootstrap
        ("multiclass", "accuracy", MC_Y, MC_P),
        ("multiclass", "macro_f1", MC_Y, MC_P),  # bootstrap
        ("regression", "rmse", REG_Y, REG_PRED),
        ("regression", "mae", REG_Y, REG_PRED),
        ("regression", "r2", REG_Y, REG_PRED),  # bootstrap
    ],
)
def test_standard_error_matches_a_bootstrap(task, metric, y, scores):
    se = standard_error(task, metric, y, scores)
    assert se == pytest.approx(_bootstrap_se(task, metric, y, scores), rel=0.3)


def test_standard_error_shrinks_with_the_window():
    small = standard_error("binary", "auc", Y[:100], GOOD[:100])
    large = standard_error("binary", "auc", Y, GOOD)
    assert large < small
    assert np.isnan(standard_error("binary", "auc", np.ones(50), GOOD[:50]))  # one class: no AUC


@pytest.mark.parametrize("bad", [{"max_drop": -0.1}, {"metric": ""}, {"max_label_shift": 2.0}])
def test_config_rejects_bad_values(bad):
    with pytest.raises(MlopsConfigurationError):
        PerformanceConfig(**bad)
