"""Learning tasks: what a model's raw output means per task, the one output transform, and the task's metrics."""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MlopsConfigurationError, ModelOutputError, explain

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


class Task(StrEnum):
    """The learning problem; it picks the loss, the output transform and the evaluation metrics."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"


class MonitorMode(StrEnum):
    """Whether a smaller or a larger value of a metric is better."""

    MIN = "min"
    MAX = "max"


def as_task(value: Any) -> Task:
    if isinstance(value, Task):
        return value
    try:
        return Task(str(value).lower())
    except ValueError:
        raise MlopsConfigurationError(
            explain("Unknown learning task", expected=f"one of {[t.value for t in Task]}", received=value)
        ) from None


#: The metrics each task reports by default, and the one the gate compares unless told otherwise.
STANDARD_METRICS: dict[Task, tuple[str, ...]] = {
    Task.BINARY: ("auc", "log_loss", "brier", "accuracy", "f1"),
    Task.MULTICLASS: ("accuracy", "macro_f1", "log_loss", "top_k_accuracy"),
    Task.REGRESSION: ("rmse", "mae", "r2"),
}
DEFAULT_METRIC: dict[Task, str] = {Task.BINARY: "auc", Task.MULTICLASS: "accuracy", Task.REGRESSION: "rmse"}
#: Counts that describe the evaluation set; reported beside the metrics, never gated on by default.
DESCRIPTIVE = ("rows", "positive_rate", "classes")
_DIRECTIONS: dict[str, MonitorMode] = {
    "auc": MonitorMode.MAX, "accuracy": MonitorMode.MAX, "f1": MonitorMode.MAX, "macro_f1": MonitorMode.MAX,
    "top_k_accuracy": MonitorMode.MAX, "r2": MonitorMode.MAX,
    "log_loss": MonitorMode.MIN, "brier": MonitorMode.MIN, "rmse": MonitorMode.MIN, "mae": MonitorMode.MIN,
    "mse": MonitorMode.MIN,
}


def metric_mode(name: str, declared: MonitorMode | str | None = None) -> MonitorMode:
    """Direction of a metric: the declared one, else the standard one, else by name (loss/error: lower)."""
    if declared is not None:
        return MonitorMode(str(declared))
    base = name[4:] if name.startswith("val_") else name
    if base in _DIRECTIONS:
        return _DIRECTIONS[base]
    lowered = base.lower()
    return MonitorMode.MIN if any(s in lowered for s in ("loss", "error", "rmse", "mae", "mse", "brier")) \
        else MonitorMode.MAX


@dataclass(frozen=True)
class UserMetric:
    """A metric of the user's: ``function(y_true, scores) -> float`` given as ``module:function``."""

    name: str
    function: str
    mode: MonitorMode = MonitorMode.MAX

    @classmethod
    def parse(cls, value: Any) -> UserMetric:
        if isinstance(value, UserMetric):
            return value
        if isinstance(value, str) and ":" in value:
            return cls(name=value.rsplit(":", 1)[1].rsplit(".", 1)[-1], function=value,
                       mode=metric_mode(value.rsplit(":", 1)[1]))
        if isinstance(value, dict) and value.get("function"):
            fn = str(value["function"])
            name = str(value.get("name") or fn.rsplit(":", 1)[-1].rsplit(".", 1)[-1])
            return cls(name=name, function=fn, mode=metric_mode(name, value.get("mode")))
        raise MlopsConfigurationError(
            explain("A user metric is malformed", expected="'module:function' or {'name', 'function', 'mode'}",
                    received=value)
        )

    def resolve(self) -> Callable[..., float]:
        module_name, _, attr = self.function.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as exc:
            raise MlopsConfigurationError(
                explain(f"Cannot import the metric {self.name!r}", expected=f"an importable {self.function}",
                        received=str(exc), hint="add the folder that holds it to the operator's pythonpath.")
            ) from exc
        if not callable(obj):
            raise MlopsConfigurationError(explain(f"Metric {self.name!r} is not callable",
                                                  expected="a function (y_true, scores) -> float",
                                                  received=type(obj)))
        return obj


def _np() -> Any:
    import numpy as np

    return np


def task_outputs(task: Task | str, raw: Any, rows: int | None = None) -> np.ndarray:
    """
    The model's raw output as the task expects it, or a :class:`ModelOutputError` naming both.

    Binary and regression models give one value per row (``[N]`` or ``[N, 1]``); multiclass models give one
    logit per class (``[N, C]``, C >= 2).
    """
    np = _np()
    task = as_task(task)
    out = np.asarray(raw, dtype="float64")
    n = out.shape[0] if out.ndim else 0
    shape = "x".join(str(s) for s in out.shape) or "scalar"
    if rows is not None and (out.ndim == 0 or n != rows):
        raise ModelOutputError(
            explain(f"The model's output does not fit the {task.value} task", expected=f"one output row per input row "
                    f"({rows})", received=f"shape {shape}", hint="the model must keep the batch dimension first.")
        )
    if task is Task.MULTICLASS:
        if out.ndim != 2 or out.shape[1] < 2:
            raise ModelOutputError(
                explain("The model's output does not fit the multiclass task",
                        expected="one logit per class, shape [N, C] with C >= 2", received=f"shape {shape}",
                        hint="declare task 'binary' or 'regression' for a single output, or give the model "
                        "out_features = number of classes.")
            )
        return out
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    if out.ndim != 1:
        raise ModelOutputError(
            explain(f"The model's output does not fit the {task.value} task",
                    expected="one value per row, shape [N] or [N, 1]", received=f"shape {shape}",
                    hint="declare task 'multiclass' for one output per class, or give the model out_features=1.")
        )
    return out


def transform(task: Task | str, raw: Any, rows: int | None = None) -> np.ndarray:
    """Scores from raw outputs: sigmoid (binary probability), softmax (class probabilities), identity (value)."""
    np = _np()
    task = as_task(task)
    out = task_outputs(task, raw, rows)
    if task is Task.BINARY:
        return 1.0 / (1.0 + np.exp(-out))
    if task is Task.MULTICLASS:
        shifted = out - out.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        return e / e.sum(axis=1, keepdims=True)
    return out


def raw_outputs(model: Any, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Forward passes of a torch module over ``x`` in batches, without gradients, as one float64 array."""
    import torch

    np = _np()
    try:
        model.eval()
    except NotImplementedError:
        pass  # an exported program is frozen in inference mode already
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            outs.append(model(torch.as_tensor(x[i:i + batch_size], dtype=torch.float32)).double().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,))


def predict_scores(model: Any, x: np.ndarray, task: Task | str, batch_size: int = 8192) -> np.ndarray:
    """The task's scores of ``model`` on ``x``: probabilities (binary), class probabilities, or values."""
    return transform(task, raw_outputs(model, x, batch_size), rows=len(x))


def class_labels(classes: Sequence[Any] | None, n: int) -> list[Any]:
    labels = list(classes) if classes else list(range(n))
    if len(labels) != n:
        raise ModelOutputError(
            explain("The model's classes do not match its output", expected=f"{n} class labels",
                    received=labels, hint="declare one label per output of the model.")
        )
    return labels


def prediction_frame(task: Task | str, scores: np.ndarray, classes: Sequence[Any] | None = None,
                     threshold: float = 0.5) -> pd.DataFrame:
    """
    What a model returns per task, as columns: ``probability`` and ``prediction`` (binary), ``prediction`` (the
    class), ``probability`` (of that class) and ``probability_<class>`` (multiclass), ``prediction`` (regression).
    """
    import pandas as pd

    np = _np()
    task = as_task(task)
    scores = np.asarray(scores, dtype="float64")
    if task is Task.BINARY:
        return pd.DataFrame({"probability": scores, "prediction": (scores >= threshold).astype("int64")})
    if task is Task.MULTICLASS:
        labels = class_labels(classes, scores.shape[1])
        best = scores.argmax(axis=1)
        frame = {"prediction": np.asarray(labels, dtype=object)[best] if not all(isinstance(c, int) for c in labels)
                 else np.asarray(labels, dtype="int64")[best],
                 "probability": scores[np.arange(len(scores)), best]}
        for k, label in enumerate(labels):
            frame[f"probability_{label}"] = scores[:, k]
        return pd.DataFrame(frame)
    return pd.DataFrame({"prediction": scores})


def prediction_signal(task: Task | str, scores: np.ndarray) -> np.ndarray:
    """The one column per row whose distribution prediction drift tests: probability, class or value."""
    np = _np()
    task = as_task(task)
    scores = np.asarray(scores)
    return scores.argmax(axis=1).astype("int64") if task is Task.MULTICLASS else scores.astype("float64")


def _labels_for(task: Task, y_true: Any) -> np.ndarray:
    np = _np()
    y = np.asarray(y_true)
    if task is Task.REGRESSION:
        try:
            return y.astype("float64").ravel()
        except ValueError as exc:
            raise ModelOutputError(explain("Regression targets are not numbers", expected="numeric targets",
                                           received=str(exc))) from exc
    try:
        labels = y.astype("int64").ravel()
    except ValueError as exc:
        raise ModelOutputError(explain(f"{task.value} targets are not class numbers", expected="integer labels",
                                       received=str(exc))) from exc
    if task is Task.BINARY and len(labels) and not set(np.unique(labels)) <= {0, 1}:
        raise ModelOutputError(
            explain("Binary targets hold more than two classes", expected="labels 0 and 1",
                    received=sorted(np.unique(labels).tolist())[:20],
                    hint="declare task 'multiclass' (or 'regression' for a continuous target).")
        )
    return labels


def compute_metrics(task: Task | str, y_true: Any, scores: Any, *, top_k: int = 3,
                    user_metrics: Sequence[Any] = (), threshold: float = 0.5) -> dict[str, float]:
    """The task's standard metrics (plus ``rows``, and user metrics) of ``scores`` against ``y_true``."""
    np = _np()
    from sklearn import metrics as skm

    task = as_task(task)
    scores = np.asarray(scores, dtype="float64")
    y = _labels_for(task, y_true)
    if len(y) != len(scores):
        raise ModelOutputError(explain("Scores and targets differ in length", expected=f"{len(y)} scores",
                                       received=len(scores)))
    out: dict[str, float] = {"rows": float(len(y))}
    if len(y) == 0:
        return out
    if task is Task.BINARY:
        p = np.clip(scores.ravel(), 1e-7, 1 - 1e-7)
        pred = (p >= threshold).astype("int64")
        out.update(
            auc=float(skm.roc_auc_score(y, p)) if len(np.unique(y)) == 2 else math.nan,
            log_loss=float(skm.log_loss(y, p, labels=[0, 1])),
            brier=float(np.mean((p - y) ** 2)),
            accuracy=float((pred == y).mean()),
            f1=float(skm.f1_score(y, pred, zero_division=0)),
            positive_rate=float(y.mean()),
        )
    elif task is Task.MULTICLASS:
        n_classes = scores.shape[1]
        if len(y) and (y.min() < 0 or y.max() >= n_classes):
            raise ModelOutputError(
                explain("Targets name classes the model has no output for",
                        expected=f"labels 0..{n_classes - 1} (the model gives {n_classes} outputs)",
                        received=sorted(set(np.unique(y).tolist()) - set(range(n_classes)))[:20],
                        hint="give the model one output per class (out_features).")
            )
        p = np.clip(scores, 1e-12, 1.0)
        p = p / p.sum(axis=1, keepdims=True)
        pred = p.argmax(axis=1)
        k = max(1, min(top_k, n_classes - 1))
        topk = np.argsort(-p, axis=1)[:, :k]
        out.update(
            accuracy=float((pred == y).mean()),
            macro_f1=float(skm.f1_score(y, pred, average="macro", labels=list(range(n_classes)), zero_division=0)),
            log_loss=float(skm.log_loss(y, p, labels=list(range(n_classes)))),
            top_k_accuracy=float((topk == y[:, None]).any(axis=1).mean()),
            classes=float(n_classes),
        )
    else:
        pred = scores.ravel()
        err = pred - y
        out.update(
            rmse=float(np.sqrt(np.mean(err**2))),
            mae=float(np.mean(np.abs(err))),
            r2=float(skm.r2_score(y, pred)) if len(y) > 1 else math.nan,
        )
    for spec in user_metrics:
        metric = UserMetric.parse(spec)
        out[metric.name] = float(metric.resolve()(y, scores))
    return out
