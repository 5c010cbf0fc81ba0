"""The damping trigger policy: which signals fire, N consecutive windows, cooldown, retrain budget, persisted state."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain

if TYPE_CHECKING:
    from airflow_mlops.hooks.storage import Storage

STATE_VERSION = 1
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
    # A performance drop on labelled data is trusted at once; feature and prediction drift together must
    # persist, because seasonal features drift in most windows without hurting the model.
    return (
        TriggerRule((Signal.PERFORMANCE_DROP,), consecutive=1),
        TriggerRule((Signal.DATA_DRIFT, Signal.PREDICTION_DRIFT), consecutive=2),
    )


@dataclass(frozen=True)
class TriggerPolicy:
    """
    When drift signals lead to training, and which kind.

    :param rules: any rule that fires triggers; a rule needs all its signals in ``consecutive`` windows in a row.
    :param cooldown_days: after a triggered training, further triggers are suppressed for this long.
    :param budget: at most this many trainings per ``budget_period_days`` (``None``: unlimited).
    :param budget_period_days: the sliding period of the budget.
    :param max_consecutive_fine_tunes: after this many fine-tunes since the last training from scratch, the
        next trigger retrains from scratch (a long chain of fine-tunes accumulates drift in the weights).
    :param retrain_on_schema_change: a schema change retrains from scratch at once, ignoring cooldown and
        budget, since the champion cannot read the new columns.
    """

    rules: tuple[TriggerRule, ...] = field(default_factory=_default_rules)
    cooldown_days: float = 0.0
    budget: int | None = None
    budget_period_days: float = 365.0
    max_consecutive_fine_tunes: int = 3
    retrain_on_schema_change: bool = True

    def __post_init__(self) -> None:
        rules = tuple(TriggerRule.from_value(r) for r in (self.rules or ()))
        if not rules:
            raise MlopsConfigurationError(
                explain("The trigger policy has no rule", expected="at least one rule such as "
                        "{'signals': ['performance_drop'], 'consecutive': 1}", received=self.rules)
            )
        object.__setattr__(self, "rules", rules)
        for name in ("cooldown_days", "budget_period_days"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise MlopsConfigurationError(explain(f"{name} is out of range", expected="a finite number >= 0",
                                                      received=value))
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise MlopsConfigurationError(
                explain("budget must be a positive integer or None", expected="1, 2, ... or None",
                        received=self.budget, hint="use None for no budget.")
            )
        if self.budget is not None and self.budget_period_days <= 0:
            raise MlopsConfigurationError(
                explain("A budget needs a period", expected="budget_period_days > 0", received=self.budget_period_days)
            )
        if isinstance(self.max_consecutive_fine_tunes, bool) or not isinstance(self.max_consecutive_fine_tunes, int) \
                or self.max_consecutive_fine_tunes < 0:
            raise MlopsConfigurationError(
                explain("max_consecutive_fine_tunes must be >= 0", expected="0 (always retrain), 1, 2, ...",
                        received=self.max_consecutive_fine_tunes)
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": [r.to_dict() for r in self.rules],
            "cooldown_days": self.cooldown_days,
            "budget": self.budget,
            "budget_period_days": self.budget_period_days,
            "max_consecutive_fine_tunes": self.max_consecutive_fine_tunes,
            "retrain_on_schema_change": self.retrain_on_schema_change,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TriggerPolicy:
        data = dict(data or {})
        known = {"rules", "cooldown_days", "budget", "budget_period_days", "max_consecutive_fine_tunes",
                 "retrain_on_schema_change"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MlopsConfigurationError(
                explain("Unknown trigger policy keys", expected=f"a subset of {sorted(known)}", received=unknown)
            )
        if "rules" in data:
            data["rules"] = tuple(TriggerRule.from_value(r) for r in data["rules"])
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
class Observation:
    """
    The signals of one monitoring window.

    :param window_id: unique id of the window (a retried task sends the same id and gets the same decision).
    :param window_end: end of the window, ISO date or datetime: cooldown and budget are measured on it.
    :param signals: the signals that fired in this window.
    """

    window_id: str
    window_end: str
    signals: frozenset[Signal] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "signals", frozenset(_signal(s) for s in self.signals))
        object.__setattr__(self, "window_end", parse_time(self.window_end).isoformat())
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
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PolicyState:
        if not data:
            return cls()
        version = data.get("version", STATE_VERSION)
        if version != STATE_VERSION:
            raise MlopsConfigurationError(
                explain("Unsupported trigger policy state version", expected=STATE_VERSION, received=version,
                        hint="delete the state file to start over (the streaks and budget restart).")
            )
        return cls(
            streaks={str(k): int(v) for k, v in (data.get("streaks") or {}).items()},
            last_window_id=data.get("last_window_id"),
            last_window_end=data.get("last_window_end"),
            last_training_at=data.get("last_training_at"),
            trainings=tuple(data.get("trainings") or ()),
            fine_tunes_in_a_row=int(data.get("fine_tunes_in_a_row") or 0),
            history=tuple(data.get("history") or ()),
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
            "fine_tunes_in_a_row": self.state.fine_tunes_in_a_row,
        }


def _record(state: PolicyState, decision: Decision) -> tuple[dict[str, Any], ...]:
    entry = {k: v for k, v in decision.to_dict().items() if k != "fine_tunes_in_a_row"}
    entry["window_end"] = state.last_window_end
    return (*state.history, entry)[-HISTORY_LIMIT:]


def decide(policy: TriggerPolicy, state: PolicyState, obs: Observation) -> Decision:
    """Fold one window's signals into the state and decide: nothing, fine-tune, or retrain from scratch."""
    signals = tuple(sorted(s.value for s in obs.signals))
    if state.last_window_id == obs.window_id and state.history:
        # The same window again (a retried task): repeat the decision, count nothing twice.
        last = state.history[-1]
        return Decision(Action(last["action"]), last["reason"], obs.window_id, tuple(last.get("fired_rules") or ()),
                        last.get("suppressed_by"), tuple(last.get("signals") or ()), state)
    now = parse_time(obs.window_end)
    if state.last_window_end is not None and now < parse_time(state.last_window_end):
        raise MlopsConfigurationError(
            explain("Windows must arrive in time order", expected=f"a window ending after {state.last_window_end}",
                    received=obs.window_end, hint="reset the policy state to replay older windows.")
        )
    streaks = {r.key: (state.streaks.get(r.key, 0) + 1 if set(r.signals) <= obs.signals else 0)
               for r in policy.rules}
    fired = tuple(r.key for r in policy.rules if streaks[r.key] >= r.consecutive)
    base = replace(state, streaks=streaks, last_window_id=obs.window_id, last_window_end=obs.window_end)

    def finish(action: Action, reason: str, suppressed: str | None = None) -> Decision:
        new = base
        if action is not Action.NONE:
            new = replace(
                new,
                # A training restarts every streak: the next trigger needs fresh evidence against the new model.
                streaks={k: 0 for k in streaks},
                last_training_at=obs.window_end,
                trainings=(*_in_budget_period(policy, base.trainings, now), obs.window_end),
                fine_tunes_in_a_row=new.fine_tunes_in_a_row + 1 if action is Action.FINE_TUNE else 0,
            )
        decision = Decision(action, reason, obs.window_id, fired, suppressed, signals, new)
        return replace(decision, state=replace(new, history=_record(new, decision)))

    if Signal.SCHEMA_CHANGE in obs.signals and policy.retrain_on_schema_change:
        return finish(Action.RETRAIN, "schema changed: retrain from scratch (the champion cannot read the data)")
    if not fired:
        watching = ", ".join(f"{k} {streaks[k]}/{r.consecutive}" for k, r in ((r.key, r) for r in policy.rules)
                             if streaks[k] > 0)
        return finish(Action.NONE, f"no rule fired ({watching or 'no signal'})")
    if state.last_training_at is not None and policy.cooldown_days > 0:
        since = now - parse_time(state.last_training_at)
        if since < timedelta(days=policy.cooldown_days):
            return finish(Action.NONE, f"{', '.join(fired)} fired but in cooldown ({since.days} of "
                                       f"{policy.cooldown_days:g} days since the last training)", "cooldown")
    if policy.budget is not None:
        recent = _in_budget_period(policy, state.trainings, now)
        if len(recent) >= policy.budget:
            return finish(Action.NONE, f"{', '.join(fired)} fired but the budget of {policy.budget} trainings per "
                                       f"{policy.budget_period_days:g} days is spent", "budget")
    if state.fine_tunes_in_a_row >= policy.max_consecutive_fine_tunes:
        return finish(Action.RETRAIN, f"{', '.join(fired)} fired after {state.fine_tunes_in_a_row} fine-tunes in a "
                                      "row: retrain from scratch")
    return finish(Action.FINE_TUNE, f"{', '.join(fired)} fired: fine-tune the champion")


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
