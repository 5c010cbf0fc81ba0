"""Performance monitoring with delayed labels: the champion's metric on a labelled past window and its sampling noise."""

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
    :param max_drop: optional fixed threshold: a worsening of at least this much against ``baseline`` (absolute, in
        metric units) fires the signal here. ``None`` (the default): no fixed threshold; the trigger policy judges
        the drop against the champion's own out-of-time windows and the metric's standard error
        (:class:`~airflow_mlops.drift.policy.DropTest`).
    :param min_rows: fewer labelled rows than this give no verdict (the metric would be noise).
    :param max_label_shift: optional, binary only: the positive rate moving this much from the champion's
        training rate also fires the signal (AUC hides a moving base rate; calibration does not).
    """

    metric: str | None = None
    max_drop: float | None = None
    min_rows: int = 30
    max_label_shift: float | None = None

    def __post_init__(self) -> None:
        if self.metric is not None and not self.metric:
            raise MlopsConfigurationError(explain("metric is empty", expected="a metric name such as 'auc'",
                                                  received=self.metric))
        if self.max_drop is not None and (isinstance(self.max_drop, bool) or not math.isfinite(self.max_drop)
                                          or self.max_drop < 0):
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
    standard_error: float | None = None
    mode: str = "max"

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


#: Resamples of the bootstrap for metrics without a closed-form standard error (f1, macro_f1, r2, user metrics).
BOOTSTRAP_RESAMPLES = 100


def _one_metric(task: Task, metric: str) -> Any:
    """A function of (y, scores) for one metric: scikit-learn for the common ones (a bootstrap calls it 100 times),
    the task's full metrics otherwise."""
    import numpy as np
    from sklearn import metrics as skm

    def safe(fn: Any) -> Any:
        def call(y: Any, s: Any) -> float:
            try:
                return float(fn(y, s))
            except ValueError:
                return math.nan
        return call

    fast = {
        (Task.BINARY, "f1"): lambda y, s: skm.f1_score(y.astype(int), (s.reshape(-1) >= 0.5).astype(int),
                                                       zero_division=0),
        (Task.MULTICLASS, "macro_f1"): lambda y, s: skm.f1_score(y.astype(int), s.reshape(len(y), -1).argmax(1),
                                                                 average="macro", zero_division=0),
        (Task.REGRESSION, "r2"): lambda y, s: skm.r2_score(y, s.reshape(-1)),
    }
    if (task, metric) in fast:
        return safe(fast[(task, metric)])
    return lambda y, s: compute_metrics(task, y, np.asarray(s)).get(metric, math.nan)


def standard_error(task: Task | str, metric: str, y_true: Any, scores: Any, value: float | None = None,
                   metric_fn: Any = None) -> float:
    """
    The sampling standard error of ``metric`` on a window of this size: closed forms for AUC (Hanley-McNeil),
    accuracy, means of per-row losses (log_loss, brier, mae) and RMSE (delta method); a seeded bootstrap of
    ``metric_fn`` (default the task's metrics) for the rest. ``nan`` when it cannot be estimated.
    """
    import numpy as np

    task = as_task(task)
    y = np.asarray(y_true)
    s = np.asarray(scores, dtype="float64")
    n = len(y)
    if n < 2:
        return math.nan
    if task is Task.BINARY and metric in ("auc", "log_loss", "brier", "accuracy"):
        yb = y.astype("float64")
        p = s.reshape(-1)
        if metric == "auc":
            n1, n0 = float(yb.sum()), float(n - yb.sum())
            a = value if _finite(value) else compute_metrics(task, y, s).get("auc", math.nan)
            if n1 < 1 or n0 < 1 or not _finite(a):
                return math.nan
            q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
            var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
            return float(math.sqrt(max(var, 0.0)))
        if metric == "accuracy":
            per_row = ((p >= 0.5) == (yb >= 0.5)).astype("float64")
        elif metric == "brier":
            per_row = (p - yb) ** 2
        else:
            q = np.clip(p, 1e-7, 1 - 1e-7)
            per_row = -(yb * np.log(q) + (1 - yb) * np.log(1 - q))
        return float(per_row.std(ddof=1) / math.sqrt(n))
    if task is Task.MULTICLASS and metric in ("accuracy", "log_loss"):
        labels = y.astype("int64")
        probs = s.reshape(n, -1)
        if metric == "accuracy":
            per_row = (probs.argmax(1) == labels).astype("float64")
        else:
            per_row = -np.log(np.clip(probs[np.arange(n), np.clip(labels, 0, probs.shape[1] - 1)], 1e-7, 1.0))
        return float(per_row.std(ddof=1) / math.sqrt(n))
    if task is Task.REGRESSION and metric in ("mae", "rmse"):
        err = s.reshape(-1) - y.astype("float64")
        if metric == "mae":
            return float(np.abs(err).std(ddof=1) / math.sqrt(n))
        sq = err ** 2
        rmse = math.sqrt(sq.mean())
        return float(sq.std(ddof=1) / math.sqrt(n) / (2 * rmse)) if rmse > 0 else 0.0
    fn = metric_fn or _one_metric(task, metric)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(BOOTSTRAP_RESAMPLES):
        idx = rng.integers(0, n, n)
        v = fn(y[idx], s[idx])
        if _finite(v):
            values.append(v)
    return float(np.std(values, ddof=1)) if len(values) > 2 else math.nan


def assess(
    y_true: np.ndarray | pd.Series,
    scores: np.ndarray | pd.Series,
    baseline: dict[str, float] | None,
    config: PerformanceConfig | None = None,
    task: Task | str = Task.BINARY,
    metrics: dict[str, float] | None = None,
) -> PerformanceResult:
    """
    The champion's metric on labelled rows with its standard error for the window's size, and, for reference, the
    change against ``baseline`` (e.g. its evaluation ``{"auc": 0.86}``). A fixed ``max_drop`` fires the signal here;
    without one the trigger policy decides from the out-of-time history (``standard_error`` and ``mode`` are for it).

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
        if config.max_drop is None:
            reasons.append(f"{metric} {value:.4f}" + (f" (evaluation {base:.4f})" if _finite(base) else "")
                           + ": judged by the policy against the out-of-time baseline")
        elif drop is not None and drop >= config.max_drop:
            degraded = True
            reasons.append(f"{metric} dropped {drop:.3f} (>= {config.max_drop:g}): {base:.3f} -> {value:.3f}")
        elif drop is not None:
            reasons.append(f"{metric} {value:.3f} vs {base:.3f} (drop {drop:.3f} < {config.max_drop:g})")
        else:
            reasons.append(f"{metric}={value} has no baseline to compare with")
        if config.max_label_shift is not None and shift is not None and shift >= config.max_label_shift:
            degraded = True
            reasons.append(f"positive rate moved {shift:.3f} (>= {config.max_label_shift:g}): {base_pos:.3f} -> {pos:.3f}")
    se = standard_error(task, metric, y_true, scores, value) if _finite(value) and metric in metrics else math.nan
    return PerformanceResult(
        metric=metric, value=float(value), baseline=base, drop=drop, degraded=degraded, rows=int(len(y_true)),
        positive_rate=None if pos is None else float(pos), baseline_positive_rate=base_pos, label_shift=shift,
        reason="; ".join(reasons), metrics={k: float(v) for k, v in metrics.items()}, task=task.value,
        standard_error=float(se) if _finite(se) else None, mode=metric_mode(metric).value,
    )
