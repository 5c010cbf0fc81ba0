"""Table tests of the trigger policy: signals, consecutive windows, cooldown, budget, fine-tune chains, persistence."""

from __future__ import annotations

import pytest

from airflow_mlops.drift.policy import (
    Action,
    Observation,
    PolicyState,
    TriggerPolicy,
    TriggerRule,
    decide,
    load_state,
    save_state,
)
from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.hooks.storage import LocalStorage

PERF = "performance_drop"
DATA = "data_drift"
PRED = "prediction_drift"
SCHEMA = "schema_change"

DEFAULT = TriggerPolicy()  # performance drop at once, or data + prediction drift in 2 windows running
PERF_ONLY_2 = TriggerPolicy(rules=[TriggerRule((PERF,), consecutive=2)])
COOLDOWN = TriggerPolicy(rules=[TriggerRule((PERF,))], cooldown_days=100)
BUDGET = TriggerPolicy(rules=[TriggerRule((PERF,))], budget=2, budget_period_days=365)
CHAIN = TriggerPolicy(rules=[TriggerRule((PERF,))], max_consecutive_fine_tunes=2)
NO_SCHEMA_RETRAIN = TriggerPolicy(rules=[TriggerRule((PERF,))], retrain_on_schema_change=False)

Q = ["1982-03-31", "1982-06-30", "1982-09-30", "1982-12-31", "1983-03-31", "1983-06-30", "1983-09-30"]


def run(policy: TriggerPolicy, windows: list[set[str]]) -> list[str]:
    state = PolicyState()
    actions = []
    for i, signals in enumerate(windows):
        decision = decide(policy, state, Observation(f"w{i}", Q[i], frozenset(signals)))
        state = decision.state
        actions.append(decision.action.value)
    return actions


N, F, R = "none", "fine_tune", "retrain"


@pytest.mark.parametrize(
    ("policy", "windows", "expected"),
    [
        # which signals fire
        (DEFAULT, [set(), set()], [N, N]),
        (DEFAULT, [{PERF}], [F]),
        (DEFAULT, [{DATA}, {DATA}, {DATA}], [N, N, N]),  # feature drift alone never trains
        (DEFAULT, [{PRED}, {PRED}], [N, N]),
        (DEFAULT, [{DATA, PRED}, {DATA, PRED}], [N, F]),  # both, two windows running
        (DEFAULT, [{DATA, PRED}, {DATA}, {DATA, PRED}], [N, N, N]),  # the streak broke
        # N consecutive windows
        (PERF_ONLY_2, [{PERF}, set(), {PERF}, {PERF}], [N, N, N, F]),
        (PERF_ONLY_2, [{PERF}, {PERF}, {PERF}, {PERF}], [N, F, N, F]),  # a training restarts the streak
        # cooldown after a training (100 days: the next quarter is suppressed, the one after is not)
        (COOLDOWN, [{PERF}, {PERF}, {PERF}], [F, N, F]),
        (COOLDOWN, [{PERF}, set(), {PERF}], [F, N, F]),
        # budget of trainings per period
        (BUDGET, [{PERF}] * 6, [F, F, N, N, F, R]),  # after 3 fine-tunes the next training retrains
        # too many fine-tunes in a row -> retrain from scratch, which resets the chain
        (CHAIN, [{PERF}] * 6, [F, F, R, F, F, R]),
        # schema change -> retrain at once (no streak needed, cooldown ignored)
        (COOLDOWN, [{PERF}, {SCHEMA}], [F, R]),
        (NO_SCHEMA_RETRAIN, [{SCHEMA}, {SCHEMA, PERF}], [N, F]),
    ],
)
def test_policy_table(policy, windows, expected):
    assert run(policy, windows) == expected


@pytest.mark.parametrize(
    ("policy", "windows", "suppressed"),
    [
        (COOLDOWN, [{PERF}, {PERF}], "cooldown"),
        (BUDGET, [{PERF}, {PERF}, {PERF}], "budget"),
    ],
)
def test_policy_says_what_suppressed_a_trigger(policy, windows, suppressed):
    state = PolicyState()
    for i, signals in enumerate(windows):
        decision = decide(policy, state, Observation(f"w{i}", Q[i], frozenset(signals)))
        state = decision.state
    assert decision.action is Action.NONE
    assert decision.suppressed_by == suppressed
    assert decision.fired_rules == (PERF,)
    assert suppressed in decision.reason


def test_same_window_twice_counts_once():
    policy = PERF_ONLY_2
    first = decide(policy, PolicyState(), Observation("w0", Q[0], frozenset({PERF})))
    again = decide(policy, first.state, Observation("w0", Q[0], frozenset({PERF})))
    assert again.state == first.state
    assert again.action is Action.NONE
    assert decide(policy, again.state, Observation("w1", Q[1], frozenset({PERF}))).action is Action.FINE_TUNE


def test_windows_out_of_order_are_refused():
    state = decide(DEFAULT, PolicyState(), Observation("w1", Q[1], frozenset())).state
    with pytest.raises(MlopsConfigurationError, match="time order"):
        decide(DEFAULT, state, Observation("w0", Q[0], frozenset()))


def test_state_survives_a_restart(tmp_path):
    storage = LocalStorage()
    uri = str(tmp_path / "policy" / "state.json")
    assert load_state(storage, uri) == PolicyState()
    state = PolicyState()
    actions = []
    for i, signals in enumerate([{PERF}, {PERF}, {PERF}, {PERF}]):
        # A new process every window: the state only lives in the file.
        state = load_state(storage, uri)
        decision = decide(COOLDOWN, state, Observation(f"w{i}", Q[i], frozenset(signals)))
        save_state(storage, uri, decision.state)
        actions.append(decision.action.value)
    assert actions == [F, N, F, N]
    restored = load_state(storage, uri)
    assert restored.fine_tunes_in_a_row == 2
    assert restored.last_training_at.startswith(Q[2])
    assert [h["action"] for h in restored.history] == actions


@pytest.mark.parametrize(
    "bad",
    [
        {"rules": []},
        {"rules": [{"signals": []}]},
        {"rules": [{"signals": ["weather"]}]},
        {"rules": [{"signals": [PERF], "consecutive": 0}]},
        {"cooldown_days": -1},
        {"budget": 0},
        {"max_consecutive_fine_tunes": -1},
        {"surprise": 1},
    ],
)
def test_policy_rejects_bad_config(bad):
    with pytest.raises(MlopsConfigurationError):
        TriggerPolicy.from_dict(bad)


def test_policy_round_trips_through_a_dict():
    policy = TriggerPolicy(rules=[TriggerRule((DATA, PRED), 3)], cooldown_days=30, budget=2)
    assert TriggerPolicy.from_dict(policy.to_dict()) == policy


def test_decision_dict_is_plain():
    decision = decide(DEFAULT, PolicyState(), Observation("w0", Q[0], frozenset({PERF, DATA})))
    d = decision.to_dict()
    assert d["action"] == "fine_tune"
    assert d["signals"] == [DATA, PERF]
    assert d["fired_rules"] == [PERF]
