"""Performance monitoring with delayed labels: score the champion on a labelled past window, measure the drop."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import DriftError, MlopsConfigurationError, explain
from airflow_mlops.tasks import DEFAULT_METRIC, MonitorMode, Task, as_task, compute_metrics, metric_mode

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd



@dataclass(frozen=True)
class PerformanceConfig:
    """
    :param metric: metric compared with the champion's evaluation metric (``auc``, ``accuracy``, ``rmse``...);
        ``None``: the task's default metric (AUC, accuracy, RMSE). Its direction is the metric's own.
    :param max_drop: a worsening of at least this much (absolute, in metric units) fires the performance signal.
    :param min_rows: fewer labelled rows than this give no verdict (the metric would be noise).
    :param max_label_shift: optional, binary only: the positive rate moving this much from the champion's
        training rate also fires the signal (AUC hides a moving base rate; calibration does not).
    """

    metric: str | None = None
    max_drop: float = 0.1
    min_rows: int = 30
    max_label_shift: float | None = None

    def __post_init__(self) -> None:
        if self.metric is not None and not self.metric:
            raise MlopsConfigurationError(explain("metric is empty", expected="a metric name such as 'auc'",
                                                  received=self.metric))
        if not math.isfinite(self.max_drop) or self.max_drop < 0:
            raise MlopsConfigurationError(explain("max_drop out of range", expected="a finite number >= 0",
                                                  received=self.max_drop))
        if self.max_label_shift is not None and not (0 < self.max_label_shift <= 1):
            raise MlopsConfigurationError(explain("max_label_shift out of range", expected="0 < shift <= 1 or None",
                                                  received=self.max_label_shift))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PerformanceConfig:
        return cls(**(data or {}))


@dataclass(frozen=True)
class PerformanceResult:
    """The champion on one labelled window against its own evaluation metric."""

    metric: str
    value: float
    baseline: float | None
    drop: float | None
    degraded: bool
    rows: int
    positive_rate: float | None
    baseline_positive_rate: float | None
    label_shift: float | None
    reason: str
    metrics: dict[str, float]
    task: str = "binary"

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def assess(
    y_true: np.ndarray | pd.Series,
    scores: np.ndarray | pd.Series,
    baseline: dict[str, float] | None,
    config: PerformanceConfig | None = None,
    task: Task | str = Task.BINARY,
    metrics: dict[str, float] | None = None,
) -> PerformanceResult:
    """
    Compare the champion's metric on labelled rows with its evaluation ``baseline`` (e.g. ``{"auc": 0.86}``).

    ``scores`` are the task's scores (see :func:`airflow_mlops.tasks.predict_scores`); ``metrics``, when given,
    are used instead of the task's standard metrics of those scores.
    """
    import numpy as np

    task = as_task(task)
    config = config or PerformanceConfig()
    metric = config.metric or DEFAULT_METRIC[task]
    y_true = np.asarray(y_true)
    if len(y_true) == 0:
        raise DriftError(explain("No labelled rows to score the champion on", expected="a window whose labels "
                                 "have arrived", received="0 rows", hint="wait for the labels or widen the window."))
    metrics = metrics if metrics is not None else compute_metrics(task, y_true, np.asarray(scores))
    value = metrics.get(metric, math.nan)
    baseline = baseline or {}
    base = baseline.get(metric)
    drop = None
    if _finite(value) and _finite(base):
        drop = value - base if metric_mode(metric) is MonitorMode.MIN else base - value
    pos = metrics.get("positive_rate")
    base_pos = baseline.get("positive_rate")
    shift = abs(pos - base_pos) if _finite(base_pos) and _finite(pos) else None
    reasons = []
    if len(y_true) < config.min_rows:
        reasons.append(f"only {len(y_true)} labelled rows (< {config.min_rows}): no verdict")
        degraded = False
    else:
        degraded = False
        if drop is not None and drop >= config.max_drop:
            degraded = True
            reasons.append(f"{metric} dropped {drop:.3f} (>= {config.max_drop:g}): {base:.3f} -> {value:.3f}")
        elif drop is not None:
            reasons.append(f"{metric} {value:.3f} vs {base:.3f} (drop {drop:.3f} < {config.max_drop:g})")
        else:
            reasons.append(f"{metric}={value} has no baseline to compare with")
        if config.max_label_shift is not None and shift is not None and shift >= config.max_label_shift:
            degraded = True
            reasons.append(f"positive rate moved {shift:.3f} (>= {config.max_label_shift:g}): {base_pos:.3f} -> {pos:.3f}")
    return PerformanceResult(
        metric=metric, value=float(value), baseline=base, drop=drop, degraded=degraded, rows=int(len(y_true)),
        positive_rate=None if pos is None else float(pos), baseline_positive_rate=base_pos, label_shift=shift,
        reason="; ".join(reasons), metrics={k: float(v) for k, v in metrics.items()}, task=task.value,
    )
