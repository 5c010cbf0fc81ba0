"""The promotion gate: a pure decision over the challenger's and the champion's metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.tasks import MonitorMode, metric_mode


class FirstModelPolicy(StrEnum):
    """What to do when there is no champion yet."""

    PROMOTE_IF_THRESHOLDS = "promote_if_thresholds"
    REJECT = "reject"


@dataclass(frozen=True)
class GatePolicy:
    """
    :param metric: metric compared with the champion (e.g. ``auc``, ``accuracy``, ``rmse`` or a user metric).
    :param mode: ``max`` when higher is better, ``min`` otherwise; default the metric's own direction
        (:func:`airflow_mlops.tasks.metric_mode`).
    :param thresholds: absolute floors (``max``) or ceilings (``min``) per metric, e.g. {"auc": 0.7}.
    :param min_improvement: required relative improvement over the champion on ``metric`` (0.0 = not worse).
    :param first_model: policy when no champion exists.
    """

    metric: str = "auc"
    mode: MonitorMode | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    min_improvement: float = 0.0
    first_model: FirstModelPolicy = FirstModelPolicy.PROMOTE_IF_THRESHOLDS
    threshold_modes: dict[str, MonitorMode] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mode", metric_mode(self.metric, self.mode))
        object.__setattr__(self, "first_model", FirstModelPolicy(self.first_model))
        object.__setattr__(self, "threshold_modes", {k: MonitorMode(v) for k, v in self.threshold_modes.items()})
        if not self.metric:
            raise MlopsConfigurationError(explain("Gate metric is empty", expected="a metric name such as 'auc'",
                                                  received=self.metric))
        if self.min_improvement < 0 or math.isnan(self.min_improvement):
            raise MlopsConfigurationError(
                explain("min_improvement must be >= 0", expected="a relative improvement such as 0.01",
                        received=self.min_improvement, hint="use thresholds to allow a worse model on purpose.")
            )

    @classmethod
    def from_dict(cls, d: dict | None) -> GatePolicy:
        return cls(**(d or {}))

    def mode_for(self, metric: str) -> MonitorMode:
        if metric in self.threshold_modes:
            return self.threshold_modes[metric]
        if metric == self.metric:
            return self.mode
        return metric_mode(metric)


@dataclass(frozen=True)
class GateDecision:
    promote: bool
    reason: str
    checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _num(x: float | None) -> str:
    """A metric in a reason: four decimals, or what it is when it is no number."""
    return f"{x:.4f}" if isinstance(x, int | float) and math.isfinite(x) else str(x)


def _bad(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and (math.isnan(x) or math.isinf(x)))


def decide(challenger: dict[str, float], champion: dict[str, float] | None, policy: GatePolicy) -> GateDecision:
    """Does the challenger pass the absolute thresholds and beat the champion by the required margin?"""
    checks: list[dict] = []
    failures: list[str] = []
    for metric, limit in sorted(policy.thresholds.items()):
        value = challenger.get(metric)
        mode = policy.mode_for(metric)
        ok = not _bad(value) and (value >= limit if mode is MonitorMode.MAX else value <= limit)
        checks.append({"check": "threshold", "metric": metric, "value": value, "limit": limit,
                       "mode": mode.value, "passed": ok})
        if not ok:
            op = ">=" if mode is MonitorMode.MAX else "<="
            failures.append(f"{metric}={_num(value)} is not {op} {_num(limit)}")
    value = challenger.get(policy.metric)
    if _bad(value):
        failures.append(f"challenger has no valid {policy.metric} (got {value})")
    if champion is None:
        if policy.first_model is FirstModelPolicy.REJECT:
            failures.append("no champion exists and the first-model policy is 'reject'")
        checks.append({"check": "champion", "metric": policy.metric, "value": value, "champion": None,
                       "passed": not failures})
        if failures:
            return GateDecision(False, "; ".join(failures), checks)
        return GateDecision(True, f"first model, {policy.metric}={_num(value)} passes all thresholds", checks)
    best = champion.get(policy.metric)
    if _bad(best):
        # A champion without the metric cannot be compared: only the thresholds decide.
        checks.append({"check": "champion", "metric": policy.metric, "value": value, "champion": best,
                       "passed": True, "note": "champion has no valid metric"})
    elif not _bad(value):
        if policy.mode is MonitorMode.MAX:
            required = best + abs(best) * policy.min_improvement
            ok = value > required if policy.min_improvement > 0 else value >= required
        else:
            required = best - abs(best) * policy.min_improvement
            ok = value < required if policy.min_improvement > 0 else value <= required
        checks.append({"check": "champion", "metric": policy.metric, "value": value, "champion": best,
                       "required": required, "passed": ok})
        if not ok:
            failures.append(
                f"{policy.metric}={value:.4f} does not beat champion {best:.4f} "
                f"(required {'>' if policy.min_improvement > 0 else '>='} {required:.4f})"
                if policy.mode is MonitorMode.MAX
                else f"{policy.metric}={value:.4f} does not beat champion {best:.4f} (required <= {required:.4f})"
            )
    if failures:
        return GateDecision(False, "; ".join(failures), checks)
    return GateDecision(True, f"{policy.metric}={_num(value)} vs champion {_num(best)}", checks)
