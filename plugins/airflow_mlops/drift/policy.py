"""The trigger policy: a calibrated performance-drop test, damping rules, cooldown and compute budget in windows."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain

if TYPE_CHECKING:
    from airflow_mlops.hooks.storage import Storage

STATE_VERSION = 2
#: State versions this module reads (version 1 files load with an empty calibration and compute account).
READABLE_STATE_VERSIONS = (1, 2)
#: Decisions kept in the persisted state, newest last (enough to explain the last few actions).
HISTORY_LIMIT = 50


class Signal(StrEnum):
    """What the monitoring of one window can report."""

    DATA_DRIFT = "data_drift"
    PREDICTION_DRIFT = "prediction_drift"
    PERFORMANCE_DROP = "performance_drop"
    SCHEMA_CHANGE = "schema_change"


class Action(StrEnum):
    """What the policy asks the continual-learning DAG to do."""

    NONE = "none"
    FINE_TUNE = "fine_tune"
    RETRAIN = "retrain"


def _signal(value: Any) -> Signal:
    if isinstance(value, Signal):
        return value
    try:
        return Signal(str(value))
    except ValueError:
        raise MlopsConfigurationError(
            explain("Unknown drift signal", expected=f"one of {[s.value for s in Signal]}", received=value)
        ) from None


@dataclass(frozen=True)
class TriggerRule:
    """
    Fires when every signal in ``signals`` fired in each of the last ``consecutive`` windows.

    :param signals: signals that must fire together, e.g. ``("data_drift", "prediction_drift")``.
    :param consecutive: windows in a row the combination must hold (the damping).
    """

    signals: tuple[Signal, ...]
    consecutive: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.signals, str | Signal):
            object.__setattr__(self, "signals", (self.signals,))
        signals = tuple(sorted({_signal(s) for s in self.signals}, key=lambda s: s.value))
        if not signals:
            raise MlopsConfigurationError(
                explain("A trigger rule names no signal", expected="at least one of "
                        f"{[s.value for s in Signal]}", received=self.signals)
            )
        object.__setattr__(self, "signals", signals)
        if isinstance(self.consecutive, bool) or not isinstance(self.consecutive, int) or self.consecutive < 1:
            raise MlopsConfigurationError(
                explain("consecutive must be a positive integer", expected="1, 2, ...", received=self.consecutive)
            )

    @property
    def key(self) -> str:
        return "+".join(s.value for s in self.signals)

    def to_dict(self) -> dict[str, Any]:
        return {"signals": [s.value for s in self.signals], "consecutive": self.consecutive}

    @classmethod
    def from_value(cls, value: Any) -> TriggerRule:
        if isinstance(value, TriggerRule):
            return value
        if isinstance(value, dict):
            return cls(signals=tuple(value.get("signals") or ()), consecutive=int(value.get("consecutive", 1)))
        if isinstance(value, str):
            return cls(signals=(value,))
        return cls(signals=tuple(value))


def _default_rules() -> tuple[TriggerRule, ...]:
    # A calibrated performance drop on labelled data is trusted at once; feature and prediction drift together
    # fired in most windows of seasonal data without any loss (see the README), so they are not a default rule.
    return (TriggerRule((Signal.PERFORMANCE_DROP,), consecutive=1),)


def _check_number(name: str, value: Any, *, minimum: float = 0.0, integer: bool = False,
                  optional: bool = False) -> None:
    if optional and value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    if not ok or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a finite number"
        raise MlopsConfigurationError(explain(f"{name} is out of range", expected=f"{kind} >= {minimum:g}"
                                              + (" or None" if optional else ""), received=value))


@dataclass(frozen=True)
class DropTest:
    """
    The performance-drop test, calibrated from the stream: the baseline is the champion lineage's own metric on
    its first ``calibration_windows`` out-of-time windows (the windows after it was trained from scratch or
    refreshed; other fine-tunes continue the lineage); each later window's drop is standardised by the metric's
    standard error for that window's size (and the baseline's), and a one-sided CUSUM of those z-scores fires when
    it reaches ``threshold``: ``threshold + allowance`` standard errors fire in one window, a smaller steady drop
    in a few.

    :param calibration_windows: out-of-time windows averaged into the baseline (no verdict before).
    :param allowance: the CUSUM's slack per window, in standard errors (drops below it never accumulate).
    :param threshold: the CUSUM level that fires ``performance_drop``.
    :param min_drop: drops smaller than this (metric units) count as none, whatever their z-score (a very large
        window makes tiny drops significant without mattering).
    """

    calibration_windows: int = 2
    allowance: float = 1.0
    threshold: float = 4.0
    min_drop: float = 0.0

    def __post_init__(self) -> None:
        _check_number("calibration_windows", self.calibration_windows, minimum=1, integer=True)
        _check_number("allowance", self.allowance)
        _check_number("threshold", self.threshold, minimum=1e-9)
        _check_number("min_drop", self.min_drop)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_value(cls, value: Any) -> DropTest:
        if isinstance(value, DropTest):
            return value
        data = dict(value or {})
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise MlopsConfigurationError(explain("Unknown drop_test keys", expected=sorted(cls.__dataclass_fields__),
                                                  received=unknown))
        return cls(**data)


@dataclass(frozen=True)
class TriggerPolicy:
    """
    When drift signals lead to training, and which kind. Every setting counts in windows or in compute, so the
    same defaults hold for quarterly, monthly or weekly windows.

    :param rules: any rule that fires triggers; a rule needs all its signals in ``consecutive`` windows in a row.
    :param drop_test: how ``performance_drop`` is judged from the champion's per-window metric (:class:`DropTest`).
    :param fine_tune_every_window: fine-tune the champion on every window (a cheap, budgeted fine-tune); a fired
        rule then asks for more: a refresh (see ``refresh_cost``), or a retrain once ``refreshes_before_retrain``
        refreshes ran since the last training from scratch.
    :param cooldown_windows: after a triggered training, rule triggers are suppressed for this many windows.
    :param budget_share: compute budget: trainings may cost at most this share of what retraining from scratch
        after every window would cost, counted from the first window (a retrain costs 1, a fine-tune
        ``fine_tune_cost``, a refresh ``refresh_cost``); ``None``: unlimited.
    :param fine_tune_cost: the cost of one fine-tune as a share of a retrain (the continual-learning DAG sizes its
        fine-tunes to it: rows times epochs).
    :param refresh_cost: with ``fine_tune_every_window``, what a fired rule asks for first: a refresh, a larger
        fine-tune of the champion (this share of a retrain, over more replay rows of the recent windows) that
        restarts the drop test's calibration (the refreshed champion's out-of-time windows are its new baseline,
        so a lasting change of the data's difficulty fires once, not every window). A retrain follows only when
        the drop test fires again after ``refreshes_before_retrain`` refreshes. ``None``: no refresh; a fired
        rule retrains once ``max_consecutive_fine_tunes`` fine-tunes (routine ones included) ran in a row.
        Without routine fine-tunes it is unused.
    :param refreshes_before_retrain: with refreshes, a fired rule retrains from scratch once this many refreshes
        ran since the last training from scratch (0: retrain at once).
    :param budget: optional count budget: at most this many triggered trainings per ``budget_period_windows``
        windows (routine fine-tunes are not counted).
    :param budget_period_windows: the sliding period of ``budget``, in windows.
    :param max_consecutive_fine_tunes: after this many fine-tunes since the last training from scratch, the
        next trigger retrains from scratch (a long chain of fine-tunes accumulates drift in the weights); with
        refreshes, ``refreshes_before_retrain`` counts instead.
    :param retrain_on_schema_change: a schema change retrains from scratch at once, ignoring cooldown and
        budget, since the champion cannot read the new columns.
    :param cooldown_days: deprecated, in days of the window end (kept so old settings load); prefer windows.
    :param budget_period_days: deprecated: with ``budget`` and no ``budget_period_windows``, the period in days.
    """

    rules: tuple[TriggerRule, ...] = field(default_factory=_default_rules)
    drop_test: DropTest = field(default_factory=DropTest)
    fine_tune_every_window: bool = True
    cooldown_windows: int = 1
    budget_share: float | None = 0.06
    fine_tune_cost: float = 0.03
    refresh_cost: float | None = 0.1
    refreshes_before_retrain: int = 1
    budget: int | None = None
    budget_period_windows: int | None = None
    max_consecutive_fine_tunes: int = 3
    retrain_on_schema_change: bool = True
    cooldown_days: float = 0.0
    budget_period_days: float = 365.0

    def __post_init__(self) -> None:
        rules = tuple(TriggerRule.from_value(r) for r in (self.rules or ()))
        if not rules and not self.fine_tune_every_window:
            raise MlopsConfigurationError(
                explain("The trigger policy has no rule", expected="at least one rule such as "
                        "{'signals': ['performance_drop'], 'consecutive': 1}, or fine_tune_every_window",
                        received=self.rules)
            )
        object.__setattr__(self, "rules", rules)
        object.__setattr__(self, "drop_test", DropTest.from_value(self.drop_test))
        for name in ("cooldown_days", "budget_period_days"):
            _check_number(name, getattr(self, name))
        _check_number("cooldown_windows", self.cooldown_windows, integer=True)
        _check_number("budget_share", self.budget_share, optional=True)
        _check_number("fine_tune_cost", self.fine_tune_cost)
        _check_number("refresh_cost", self.refresh_cost, optional=True)
        _check_number("refreshes_before_retrain", self.refreshes_before_retrain, integer=True)
        _check_number("budget_period_windows", self.budget_period_windows, minimum=1, integer=True, optional=True)
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise MlopsConfigurationError(
                explain("budget must be a positive integer or None", expected="1, 2, ... or None",
                        received=self.budget, hint="use None for no count budget (budget_share bounds compute).")
            )
        if self.budget is not None and self.budget_period_windows is None and self.budget_period_days <= 0:
            raise MlopsConfigurationError(
                explain("A budget needs a period", expected="budget_period_windows >= 1",
                        received=self.budget_period_windows)
            )
        if isinstance(self.max_consecutive_fine_tunes, bool) or not isinstance(self.max_consecutive_fine_tunes, int) \
                or self.max_consecutive_fine_tunes < 0:
            raise MlopsConfigurationError(
                explain("max_consecutive_fine_tunes must be >= 0", expected="0 (always retrain), 1, 2, ...",
                        received=self.max_consecutive_fine_tunes)
            )

    @property
    def refreshes(self) -> bool:
        """Whether a fired rule first asks for a refresh (routine fine-tunes on and a ``refresh_cost``)."""
        return self.fine_tune_every_window and self.refresh_cost is not None

    def cost(self, action: Action, refresh: bool = False) -> float:
        """Compute of one action, in retrains from scratch (``refresh``: a triggered fine-tune that refreshes)."""
        if action is Action.FINE_TUNE and refresh and self.refresh_cost is not None:
            return self.refresh_cost
        return {Action.NONE: 0.0, Action.FINE_TUNE: self.fine_tune_cost, Action.RETRAIN: 1.0}[action]

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [r.to_dict() for r in self.rules],
            "drop_test": self.drop_test.to_dict(),
            "fine_tune_every_window": self.fine_tune_every_window,
            "cooldown_windows": self.cooldown_windows,
            "budget_share": self.budget_share,
            "fine_tune_cost": self.fine_tune_cost,
            "refresh_cost": self.refresh_cost,
            "refreshes_before_retrain": self.refreshes_before_retrain,
            "budget": self.budget,
            "budget_period_windows": self.budget_period_windows,
            "max_consecutive_fine_tunes": self.max_consecutive_fine_tunes,
            "retrain_on_schema_change": self.retrain_on_schema_change,
            "cooldown_days": self.cooldown_days,
            "budget_period_days": self.budget_period_days,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TriggerPolicy:
        data = dict(data or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise MlopsConfigurationError(
                explain("Unknown trigger policy keys", expected=f"a subset of {sorted(known)}", received=unknown)
            )
        if "rules" in data:
            data["rules"] = tuple(TriggerRule.from_value(r) for r in data["rules"])
        if "drop_test" in data:
            data["drop_test"] = DropTest.from_value(data["drop_test"])
        return cls(**data)


def parse_time(value: str | float | datetime) -> datetime:
    """
    ISO date or datetime -> naive datetime (window ends are compared, never shown). A number (a window of a
    numeric time column such as a batch number) counts in days from 1970-01-01, so ``cooldown_days`` and
    ``budget_period_days`` count in units of that column.
    """
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    try:
        return datetime(1970, 1, 1) + timedelta(days=float(value))
    except (TypeError, ValueError, OverflowError):
        pass
    try:
        return datetime.fromisoformat(str(value)).replace(tzinfo=None)
    except ValueError:
        raise MlopsConfigurationError(
            explain("Window end is not an ISO date", expected="'1982-03-31' or '1982-03-31T00:00:00'",
                    received=value)
        ) from None


@dataclass(frozen=True)
class PerformanceSample:
    """
    The champion's metric on one labelled window, with its sampling standard error for the window's size.

    :param metric: metric name (``auc``, ``accuracy``, ``rmse``...).
    :param value: the metric on the window.
    :param standard_error: its standard error (``None``: unknown; the drop test then gives no verdict).
    :param mode: ``max`` when larger is better, ``min`` when smaller is.
    :param rows: labelled rows scored.
    """

    metric: str
    value: float
    standard_error: float | None = None
    mode: str = "max"
    rows: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise MlopsConfigurationError(explain("mode of a metric must be 'min' or 'max'", expected="'min' or 'max'",
                                                  received=self.mode))

    @classmethod
    def from_value(cls, value: Any) -> PerformanceSample | None:
        """From a :class:`PerformanceSample`, ``None``, or a performance monitor's result dictionary."""
        if value is None or isinstance(value, PerformanceSample):
            return value
        data = dict(value)
        if data.get("value") is None or not data.get("metric"):
            return None
        se = data.get("standard_error")
        return cls(metric=str(data["metric"]), value=float(data["value"]),
                   standard_error=None if se is None else float(se), mode=str(data.get("mode") or "max"),
                   rows=int(data.get("rows") or 0))


@dataclass(frozen=True)
class Observation:
    """
    The signals of one monitoring window.

    :param window_id: unique id of the window (a retried task sends the same id and gets the same decision).
    :param window_end: end of the window, ISO date or datetime (or a number for a numeric time column); windows
        must arrive in time order.
    :param signals: the signals that fired in this window.
    :param performance: the champion's metric on the window's labels, for the calibrated drop test.
    """

    window_id: str
    window_end: str
    signals: frozenset[Signal] = frozenset()
    performance: PerformanceSample | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "signals", frozenset(_signal(s) for s in self.signals))
        object.__setattr__(self, "window_end", parse_time(self.window_end).isoformat())
        object.__setattr__(self, "performance", PerformanceSample.from_value(self.performance))
        if not self.window_id:
            raise MlopsConfigurationError(explain("window_id is empty", expected="a unique window id",
                                                  received=self.window_id))


@dataclass(frozen=True)
class PolicyState:
    """What the policy remembers between windows; persisted as JSON so a restart does not reset it."""

    streaks: dict[str, int] = field(default_factory=dict)
    last_window_id: str | None = None
    last_window_end: str | None = None
    last_training_at: str | None = None
    trainings: tuple[str, ...] = ()
    fine_tunes_in_a_row: int = 0
    history: tuple[dict[str, Any], ...] = ()
    windows_seen: int = 0
    refreshes_in_a_row: int = 0
    spent: float = 0.0
    training_windows: tuple[int, ...] = ()
    calibration: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "streaks": dict(sorted(self.streaks.items())),
            "last_window_id": self.last_window_id,
            "last_window_end": self.last_window_end,
            "last_training_at": self.last_training_at,
            "trainings": list(self.trainings),
            "fine_tunes_in_a_row": self.fine_tunes_in_a_row,
            "history": list(self.history),
            "windows_seen": self.windows_seen,
            "refreshes_in_a_row": self.refreshes_in_a_row,
            "spent": self.spent,
            "training_windows": list(self.training_windows),
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyState:
        """Reads version 2 and version 1 states (the latter start with no calibration and nothing spent)."""
        if not data:
            return cls()
        version = data.get("version", STATE_VERSION)
        if version not in READABLE_STATE_VERSIONS:
            raise MlopsConfigurationError(
                explain("Unsupported trigger policy state version", expected=READABLE_STATE_VERSIONS,
                        received=version, hint="delete the state to start over (the streaks and budget restart).")
            )
        return cls(
            streaks={str(k): int(v) for k, v in (data.get("streaks") or {}).items()},
            last_window_id=data.get("last_window_id"),
            last_window_end=data.get("last_window_end"),
            last_training_at=data.get("last_training_at"),
            trainings=tuple(data.get("trainings") or ()),
            fine_tunes_in_a_row=int(data.get("fine_tunes_in_a_row") or 0),
            history=tuple(data.get("history") or ()),
            windows_seen=int(data.get("windows_seen") or 0),
            refreshes_in_a_row=int(data.get("refreshes_in_a_row") or 0),
            spent=float(data.get("spent") or 0.0),
            training_windows=tuple(int(w) for w in data.get("training_windows") or ()),
            calibration=dict(data.get("calibration") or {}),
        )


@dataclass(frozen=True)
class Decision:
    """The policy's answer for one window, with the state to persist."""

    action: Action
    reason: str
    window_id: str
    fired_rules: tuple[str, ...] = ()
    suppressed_by: str | None = None
    signals: tuple[str, ...] = ()
    state: PolicyState = field(default_factory=PolicyState)
    drop: dict[str, Any] = field(default_factory=dict)
    cost: float = 0.0
    refresh: bool = False

    @property
    def triggered(self) -> bool:
        return self.action is not Action.NONE

    def to_dict(self) -> dict[str, Any]:
        """Plain values for XCom and asset events (the state is persisted separately)."""
        return {
            "action": self.action.value,
            "reason": self.reason,
            "window_id": self.window_id,
            "fired_rules": list(self.fired_rules),
            "suppressed_by": self.suppressed_by,
            "signals": list(self.signals),
            "drop_test": dict(self.drop),
            "cost": self.cost,
            "refresh": self.refresh,
            "fine_tunes_in_a_row": self.state.fine_tunes_in_a_row,
            "spent": round(self.state.spent, 6),
        }


def _record(state: PolicyState, decision: Decision) -> tuple[dict[str, Any], ...]:
    entry = {k: v for k, v in decision.to_dict().items() if k not in ("fine_tunes_in_a_row", "spent")}
    entry["window_end"] = state.last_window_end
    return (*state.history, entry)[-HISTORY_LIMIT:]


def drop_test(test: DropTest, calibration: dict[str, Any], sample: PerformanceSample | None
              ) -> tuple[bool, dict[str, Any], dict[str, Any]]:
    """
    One window of the calibrated performance-drop test: ``(fired, details, new calibration)``. The calibration
    holds the lineage's out-of-time ``values`` (value, standard error) and the running ``cusum``.
    """
    cal = dict(calibration or {})
    if sample is None or not math.isfinite(sample.value):
        return False, {"verdict": "no labelled metric"}, cal
    if cal.get("metric") not in (None, sample.metric):
        cal = {}  # another metric: calibrate again
    values = [list(v) for v in cal.get("values") or ()]
    se = sample.standard_error
    if len(values) < test.calibration_windows:
        values.append([sample.value, se])
        new = {"metric": sample.metric, "values": values, "cusum": 0.0}
        return False, {"verdict": f"calibrating {len(values)}/{test.calibration_windows}",
                       "value": sample.value}, new
    base = sum(v for v, _ in values) / len(values)
    base_ses = [e for _, e in values if e is not None and math.isfinite(e)]
    drop = base - sample.value if sample.mode == "max" else sample.value - base
    cusum = float(cal.get("cusum") or 0.0)
    details: dict[str, Any] = {"baseline": round(base, 6), "value": round(sample.value, 6), "drop": round(drop, 6)}
    if se is None or not math.isfinite(se) or len(base_ses) < len(values):
        details["verdict"] = "no standard error: no verdict"
        return False, details, {**cal, "metric": sample.metric, "values": values, "cusum": cusum}
    scale = math.sqrt(se * se + sum(e * e for e in base_ses) / len(base_ses) ** 2)
    z = (drop if drop >= test.min_drop else min(drop, 0.0)) / scale if scale > 0 else 0.0
    cusum = max(0.0, cusum + z - test.allowance)
    fired = cusum >= test.threshold
    details.update(z=round(z, 3), cusum=round(cusum, 3), threshold=test.threshold,
                   verdict="dropped" if fired else "within noise")
    return fired, details, {**cal, "metric": sample.metric, "values": values, "cusum": cusum}


def decide(policy: TriggerPolicy, state: PolicyState, obs: Observation) -> Decision:
    """Fold one window's signals into the state and decide: nothing, fine-tune, or retrain from scratch."""
    if state.last_window_id == obs.window_id and state.history:
        # The same window again (a retried task): repeat the decision, count nothing twice.
        last = state.history[-1]
        return Decision(Action(last["action"]), last["reason"], obs.window_id, tuple(last.get("fired_rules") or ()),
                        last.get("suppressed_by"), tuple(last.get("signals") or ()), state,
                        dict(last.get("drop_test") or {}), float(last.get("cost") or 0.0),
                        bool(last.get("refresh")))
    now = parse_time(obs.window_end)
    if state.last_window_end is not None and now < parse_time(state.last_window_end):
        raise MlopsConfigurationError(
            explain("Windows must arrive in time order", expected=f"a window ending after {state.last_window_end}",
                    received=obs.window_end, hint="reset the policy state to replay older windows.")
        )
    index = state.windows_seen + 1
    dropped, drop, calibration = drop_test(policy.drop_test, state.calibration, obs.performance)
    observed = set(obs.signals) | ({Signal.PERFORMANCE_DROP} if dropped else set())
    signals = tuple(sorted(s.value for s in observed))
    streaks = {r.key: (state.streaks.get(r.key, 0) + 1 if set(r.signals) <= observed else 0)
               for r in policy.rules}
    fired = tuple(r.key for r in policy.rules if streaks[r.key] >= r.consecutive)
    base = replace(state, streaks=streaks, last_window_id=obs.window_id, last_window_end=obs.window_end,
                   windows_seen=index, calibration=calibration)
    allowance = math.inf if policy.budget_share is None else policy.budget_share * index

    def affordable(action: Action, refresh: bool = False) -> bool:
        return state.spent + policy.cost(action, refresh) <= allowance + 1e-9

    def finish(action: Action, reason: str, suppressed: str | None = None, routine: bool = False,
               refresh: bool = False) -> Decision:
        new = base
        cost = policy.cost(action, refresh)
        if action is not Action.NONE:
            new = replace(new, spent=state.spent + cost,
                          fine_tunes_in_a_row=new.fine_tunes_in_a_row + 1 if action is Action.FINE_TUNE else 0,
                          refreshes_in_a_row=(new.refreshes_in_a_row + 1 if refresh
                                              else 0 if action is Action.RETRAIN else new.refreshes_in_a_row))
        if action is not Action.NONE and not routine:
            new = replace(
                new,
                # A triggered training restarts every streak and the drop test's sum: the next trigger needs fresh
                # evidence against the new model.
                streaks={k: 0 for k in streaks},
                last_training_at=obs.window_end,
                trainings=(*_in_budget_period(policy, base.trainings, now), obs.window_end),
                training_windows=(*base.training_windows, index)[-HISTORY_LIMIT:],
                calibration={**calibration, "cusum": 0.0},
            )
        if action is Action.RETRAIN or refresh:
            # A new lineage, or a refreshed one: its baseline is its own out-of-time windows from here on.
            new = replace(new, calibration={})
        decision = Decision(action, reason, obs.window_id, fired, suppressed, signals, new, drop, cost, refresh)
        return replace(decision, state=replace(new, history=_record(new, decision)))

    def routine(reason: str, suppressed: str | None = None) -> Decision:
        if policy.fine_tune_every_window and affordable(Action.FINE_TUNE):
            return finish(Action.FINE_TUNE, f"{reason}; routine fine-tune", suppressed, routine=True)
        if policy.fine_tune_every_window:
            return finish(Action.NONE, f"{reason}; the compute budget leaves no routine fine-tune", "budget")
        return finish(Action.NONE, reason, suppressed)

    if Signal.SCHEMA_CHANGE in obs.signals and policy.retrain_on_schema_change:
        return finish(Action.RETRAIN, "schema changed: retrain from scratch (the champion cannot read the data)")
    if not fired:
        watching = ", ".join(f"{r.key} {streaks[r.key]}/{r.consecutive}" for r in policy.rules if streaks[r.key] > 0)
        return routine(f"no rule fired ({watching or 'no signal'})")
    names = ", ".join(fired)
    last_index = state.training_windows[-1] if state.training_windows else None
    if last_index is not None and policy.cooldown_windows > 0 and index - last_index <= policy.cooldown_windows:
        return routine(f"{names} fired but in cooldown ({index - last_index} of {policy.cooldown_windows} windows "
                       "since the last training)", "cooldown")
    if state.last_training_at is not None and policy.cooldown_days > 0:
        since = now - parse_time(state.last_training_at)
        if since < timedelta(days=policy.cooldown_days):
            return routine(f"{names} fired but in cooldown ({since.days} of {policy.cooldown_days:g} days since "
                           "the last training)", "cooldown")
    if policy.budget is not None:
        if policy.budget_period_windows is not None:
            recent = [w for w in state.training_windows if index - w < policy.budget_period_windows]
            period = f"{policy.budget_period_windows} windows"
        else:
            recent = list(_in_budget_period(policy, state.trainings, now))
            period = f"{policy.budget_period_days:g} days"
        if len(recent) >= policy.budget:
            return routine(f"{names} fired but the budget of {policy.budget} trainings per {period} is spent",
                           "budget")
    chain = state.refreshes_in_a_row if policy.refreshes else state.fine_tunes_in_a_row
    limit = policy.refreshes_before_retrain if policy.refreshes else policy.max_consecutive_fine_tunes
    action = Action.RETRAIN if chain >= limit else Action.FINE_TUNE
    refresh = action is Action.FINE_TUNE and policy.refreshes
    kind = "refresh" if refresh else action.value
    if not affordable(action, refresh):
        return routine(f"{names} fired but a {kind} would exceed the compute budget ({state.spent:.2f} of "
                       f"{allowance:.2f} retrains spent)", "budget")
    if action is Action.RETRAIN:
        done = "refreshes" if policy.refreshes else "fine-tunes"
        return finish(action, f"{names} fired after {chain} {done} in a row: retrain from scratch")
    if refresh:
        return finish(action, f"{names} fired: refresh the champion (a fine-tune of {policy.refresh_cost:g} of a "
                              f"retrain; refresh {chain + 1} of {limit} before a retrain)",
                      refresh=True)
    return finish(action, f"{names} fired: fine-tune the champion")


def _in_budget_period(policy: TriggerPolicy, trainings: tuple[str, ...], now: datetime) -> tuple[str, ...]:
    horizon = now - timedelta(days=policy.budget_period_days)
    return tuple(t for t in trainings if parse_time(t) > horizon)


# --- persistence ---------------------------------------------------------------------------------------------


def load_state(storage: Storage, uri: str) -> PolicyState:
    """The persisted state at ``uri``, or a fresh one when nothing was saved yet."""
    if not storage.exists(uri):
        return PolicyState()
    raw = storage.read_bytes(uri)
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MlopsConfigurationError(
            explain("Trigger policy state is not valid JSON", expected="the JSON written by save_state",
                    received=raw[:80], hint=f"fix or delete {uri}.")
        ) from exc
    return PolicyState.from_dict(data)


def save_state(storage: Storage, uri: str, state: PolicyState) -> None:
    """Write the state in one atomic put (a rename on disk, a single PUT on S3)."""
    storage.write_bytes(uri, json.dumps(state.to_dict(), indent=1, sort_keys=True).encode("utf-8"))
