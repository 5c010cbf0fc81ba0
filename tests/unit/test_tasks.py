"""Learning tasks: the one output transform, shape checks against the declared task, metrics and directions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from airflow_mlops.exceptions import MlopsConfigurationError, ModelOutputError
from airflow_mlops.tasks import (
    DEFAULT_METRIC,
    STANDARD_METRICS,
    MonitorMode,
    Task,
    UserMetric,
    compute_metrics,
    metric_mode,
    prediction_frame,
    prediction_signal,
    transform,
)


def test_binary_is_a_sigmoid_of_one_logit_per_row():
    out = transform("binary", np.array([[0.0], [2.0], [-2.0]]), rows=3)
    assert out.shape == (3,)
    assert out[0] == pytest.approx(0.5) and out[1] == pytest.approx(1 / (1 + math.exp(-2)))


def test_multiclass_is_a_softmax_over_classes():
    raw = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    out = transform(Task.MULTICLASS, raw, rows=2)
    assert out.shape == (2, 3)
    assert np.allclose(out.sum(axis=1), 1.0)
    assert out[0].argmax() == 2 and np.allclose(out[1], 1 / 3)


def test_regression_is_the_identity():
    assert np.array_equal(transform("regression", np.array([[1.5], [-2.0]]), rows=2), [1.5, -2.0])


@pytest.mark.parametrize(("task", "shape", "named"), [
    ("binary", (4, 10), "binary"),
    ("regression", (4, 10), "regression"),
    ("multiclass", (4, 1), "multiclass"),
    ("multiclass", (4,), "multiclass"),
    ("binary", (40,), "one output row per input row"),
    ("binary", (4, 2, 2), "binary"),
])
def test_an_output_that_contradicts_the_task_is_refused_naming_both(task, shape, named):
    with pytest.raises(ModelOutputError) as err:
        transform(task, np.zeros(shape), rows=4)
    message = str(err.value)
    assert named in message and "shape" in message and "Hint:" in message or "per input row" in message


@pytest.mark.parametrize("task", list(Task))
def test_every_task_reports_its_standard_metrics(task):
    rng = np.random.default_rng(0)
    n = 60
    if task is Task.BINARY:
        y, scores = rng.integers(0, 2, n), rng.random(n)
    elif task is Task.MULTICLASS:
        y, scores = rng.integers(0, 4, n), transform(task, rng.normal(size=(n, 4)), n)
    else:
        y = rng.normal(size=n)
        scores = y + rng.normal(scale=0.1, size=n)
    metrics = compute_metrics(task, y, scores)
    assert set(STANDARD_METRICS[task]) <= set(metrics)
    assert metrics["rows"] == n
    assert DEFAULT_METRIC[task] in metrics


def test_metrics_are_right_on_known_values():
    perfect = compute_metrics("binary", [0, 1, 1, 0], [0.1, 0.9, 0.8, 0.3])
    assert perfect["auc"] == 1.0 and perfect["accuracy"] == 1.0 and perfect["f1"] == 1.0
    reg = compute_metrics("regression", [1.0, 2.0, 3.0], [1.0, 2.0, 4.0])
    assert reg["rmse"] == pytest.approx(math.sqrt(1 / 3)) and reg["mae"] == pytest.approx(1 / 3)
    assert reg["r2"] == pytest.approx(0.5)
    probs = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]])
    multi = compute_metrics("multiclass", [0, 1, 1], probs, top_k=2)
    assert multi["accuracy"] == pytest.approx(2 / 3)
    assert multi["top_k_accuracy"] == 1.0  # the second row's label is its second-best class
    assert multi["classes"] == 3


def test_binary_labels_outside_0_1_name_the_task_to_declare():
    with pytest.raises(ModelOutputError, match="multiclass"):
        compute_metrics("binary", [0, 1, 2], [0.1, 0.5, 0.9])


def test_multiclass_labels_beyond_the_outputs_are_refused():
    with pytest.raises(ModelOutputError, match="no output for"):
        compute_metrics("multiclass", [0, 5], np.full((2, 3), 1 / 3))


@pytest.mark.parametrize(("metric", "mode"), [
    ("auc", MonitorMode.MAX), ("accuracy", MonitorMode.MAX), ("macro_f1", MonitorMode.MAX), ("r2", MonitorMode.MAX),
    ("rmse", MonitorMode.MIN), ("mae", MonitorMode.MIN), ("log_loss", MonitorMode.MIN), ("brier", MonitorMode.MIN),
    ("val_loss", MonitorMode.MIN), ("my_error", MonitorMode.MIN), ("recall_at_5", MonitorMode.MAX),
])
def test_each_metric_has_its_direction(metric, mode):
    assert metric_mode(metric) is mode


def test_a_declared_direction_wins():
    assert metric_mode("recall_at_5", "min") is MonitorMode.MIN


def _share_of_zero_labels(y_true, scores):
    return float((np.asarray(y_true) == 0).mean())


def test_user_metrics_are_called_with_targets_and_scores():
    metrics = compute_metrics("binary", [0, 1, 0, 0], [0.1, 0.9, 0.2, 0.3],
                              user_metrics=[f"{__name__}:_share_of_zero_labels",
                                            {"name": "zeros", "function": f"{__name__}:_share_of_zero_labels",
                                             "mode": "min"}])
    assert metrics["_share_of_zero_labels"] == 0.75 and metrics["zeros"] == 0.75
    assert UserMetric.parse({"name": "zeros", "function": "m:f", "mode": "min"}).mode is MonitorMode.MIN


def test_a_user_metric_that_does_not_import_says_where_to_look():
    with pytest.raises(MlopsConfigurationError, match="pythonpath"):
        compute_metrics("binary", [0, 1], [0.2, 0.8], user_metrics=["no_such_module_xyz:metric"])


def test_prediction_frames_per_task():
    binary = prediction_frame("binary", np.array([0.2, 0.7]))
    assert list(binary.columns) == ["probability", "prediction"] and binary["prediction"].tolist() == [0, 1]
    multi = prediction_frame("multiclass", np.array([[0.1, 0.9], [0.8, 0.2]]), classes=["cat", "dog"])
    assert list(multi.columns) == ["prediction", "probability", "probability_cat", "probability_dog"]
    assert multi["prediction"].tolist() == ["dog", "cat"] and multi["probability"].tolist() == [0.9, 0.8]
    reg = prediction_frame("regression", np.array([3.5]))
    assert list(reg.columns) == ["prediction"]
    with pytest.raises(ModelOutputError, match="class labels"):
        prediction_frame("multiclass", np.array([[0.5, 0.5]]), classes=["a", "b", "c"])


def test_prediction_signal_is_the_class_for_multiclass():
    assert prediction_signal("multiclass", np.array([[0.1, 0.9], [0.8, 0.2]])).tolist() == [1, 0]
    assert prediction_signal("binary", np.array([0.3])).tolist() == [0.3]
