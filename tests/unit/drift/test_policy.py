"""Table tests of the trigger policy: signals, windows, cooldown, budgets, the calibrated drop test, persistence."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.drift.policy import (
    Action,
    DropTest,
    Observation,
    PerformanceSample,
    PolicyState,
    TriggerPolicy,
    TriggerRule,
    decide,
    drop_test,
    load_state,
    save_state,
)
from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.hooks.storage import LocalStorage

PERF = "performance_drop"
DATA = "data_drift"
PRED = "prediction_drift"
SCHEMA = "schema_change"



def rules_only(**kwargs) -> TriggerPolicy:
    """Trainings only when a rule fires; no cooldown, no compute budget unless given."""
    base = {"fine_tune_every_window": False, "budget_share": None, "cooldown_windows": 0}
    return TriggerPolicy(**{**base, **kwargs})


DEFAULT = TriggerPolicy()  # shipped: routine fine-tune every window; a calibrated drop refreshes, then retrains
RULES = rules_only(rules=[TriggerRule((PERF,)), TriggerRule((DATA, PRED), consecutive=2)])
PERF_ONLY_2 = rules_only(rules=[TriggerRule((PERF,), consecutive=2)])
COOLDOWN = rules_only(rules=[TriggerRule((PERF,))], cooldown_days=100)  # deprecated, in days
BUDGET = rules_only(rules=[TriggerRule((PERF,))], budget=2, budget_period_days=365)  # deprecated, in days
COOLDOWN_W = rules_only(rules=[TriggerRule((PERF,))], cooldown_windows=2)
BUDGET_W = rules_only(rules=[TriggerRule((PERF,))], budget=2, budget_period_windows=4)
CHAIN = rules_only(rules=[TriggerRule((PERF,))], max_consecutive_fine_tunes=2)
NO_SCHEMA_RETRAIN = rules_only(rules=[TriggerRule((PERF,))], retrain_on_schema_change=False)
# compute budget: 0.5 of a retrain per window, a fine-tune costs 0.25
COMPUTE = rules_only(rules=[TriggerRule((PERF,))], budget_share=0.5, fine_tune_cost=0.25, max_consecutive_fine_tunes=1)
FT_EVERY = TriggerPolicy(rules=(), budget_share=None)  # fine-tune every window, as a policy of its own
ROUTINE = TriggerPolicy(budget_share=0.3, fine_tune_cost=0.1, cooldown_windows=0, max_consecutive_fine_tunes=0,
                        refresh_cost=None)  # no refresh: a fired rule retrains
# routine fine-tunes at 0.1, a fired rule refreshes at 0.2 of a retrain, then retrains; 0.3 of a retrain per window
REFRESH = TriggerPolicy(budget_share=0.3, fine_tune_cost=0.1, refresh_cost=0.2, refreshes_before_retrain=1,
                        cooldown_windows=0)

Q = ["1982-03-31", "1982-06-30", "1982-09-30", "1982-12-31", "1983-03-31", "1983-06-30", "1983-09-30",
     "1983-12-31", "1984-03-31"]


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
        (RULES, [set(), set()], [N, N]),
        (RULES, [{PERF}], [F]),
        (RULES, [{DATA}, {DATA}, {DATA}], [N, N, N]),  # feature drift alone never trains
        (RULES, [{PRED}, {PRED}], [N, N]),
        (RULES, [{DATA, PRED}, {DATA, PRED}], [N, F]),  # both, two windows running
        (RULES, [{DATA, PRED}, {DATA}, {DATA, PRED}], [N, N, N]),  # the streak broke
        # the shipped defaults: a routine fine-tune every window; a fired rule retrains once the budget allows
        (DEFAULT, [set(), set(), set()], [F, F, F]),
        (DEFAULT, [{PERF}], [F]),  # 0.06 of a retrain per window: a refresh (0.1) is not affordable yet
        # refresh first (0.1 + 0.2 <= 0.6), then a retrain once affordable (0.5 + 1 <= 1.5), then refresh again
        (REFRESH, [set(), {PERF}, set(), {PERF}, {PERF}, {PERF}], [F, F, F, F, R, F]),
        (FT_EVERY, [set(), {PERF}, {DATA, PRED}, set()], [F, F, F, F]),
        (FT_EVERY, [{SCHEMA}], [R]),
        (ROUTINE, [set(), {PERF}, set(), set(), {PERF}], [F, F, F, F, R]),  # retrain when 0.3 x 5 >= 0.4 + 1
        # cooldown and count budget in windows
        (COOLDOWN_W, [{PERF}, {PERF}, {PERF}, {PERF}], [F, N, N, F]),
        (BUDGET_W, [{PERF}] * 7, [F, F, N, N, F, R, N]),  # the 4th training in a row retrains
        # the compute budget: 0.5 per window; fine-tune 0.25, retrain 1
        (COMPUTE, [{PERF}, {PERF}, {PERF}, {PERF}, {PERF}], [F, N, R, F, R]),
        # N consecutive windows
        (PERF_ONLY_2, [{PERF}, set(), {PERF}, {PERF}], [N, N, N, F]),
        (PERF_ONLY_2, [{PERF}, {PERF}, {PERF}, {PERF}], [N, F, N, F]),  # a training restarts the streak
        # deprecated day-based cooldown after a training (100 days: the next quarter is suppressed)
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
        (COOLDOWN_W, [{PERF}, {PERF}], "cooldown"),
        (BUDGET_W, [{PERF}, {PERF}, {PERF}], "budget"),
        (COMPUTE, [{PERF}, {PERF}], "budget"),
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
    state = decide(RULES, PolicyState(), Observation("w1", Q[1], frozenset())).state
    with pytest.raises(MlopsConfigurationError, match="time order"):
        decide(RULES, state, Observation("w0", Q[0], frozenset()))


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
        {"rules": [{"signals": []}]},
        {"rules": [{"signals": ["weather"]}]},
        {"rules": [{"signals": [PERF], "consecutive": 0}]},
        {"rules": [], "fine_tune_every_window": False},
        {"cooldown_days": -1},
        {"cooldown_windows": -1},
        {"cooldown_windows": 1.5},
        {"budget_share": -0.1},
        {"fine_tune_cost": float("nan")},
        {"budget_period_windows": 0},
        {"drop_test": {"threshold": 0}},
        {"drop_test": {"calibration_windows": 0}},
        {"drop_test": {"surprise": 1}},
        {"budget": 0},
        {"max_consecutive_fine_tunes": -1},
        {"refresh_cost": -0.1},
        {"refreshes_before_retrain": -1},
        {"refreshes_before_retrain": 1.5},
        {"surprise": 1},
    ],
)
def test_policy_rejects_bad_config(bad):
    with pytest.raises(MlopsConfigurationError):
        TriggerPolicy.from_dict(bad)


def test_policy_round_trips_through_a_dict():
    policy = TriggerPolicy(rules=[TriggerRule((DATA, PRED), 3)], cooldown_windows=3, budget=2,
                           budget_period_windows=8, drop_test=DropTest(calibration_windows=3, min_drop=0.01),
                           refresh_cost=0.3, refreshes_before_retrain=2)
    assert TriggerPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    assert TriggerPolicy.from_dict({"refresh_cost": None}).refreshes is False


def test_refresh_decisions_say_what_they_cost_and_survive_a_restart(tmp_path):
    storage = LocalStorage()
    uri = str(tmp_path / "state.json")
    decisions = []
    for i, signals in enumerate([set(), {PERF}, set(), {PERF}, {PERF}, {PERF}]):
        decision = decide(REFRESH, load_state(storage, uri), Observation(f"w{i}", Q[i], frozenset(signals)))
        save_state(storage, uri, decision.state)
        decisions.append(decision)
    assert [d.refresh for d in decisions] == [False, True, False, False, False, True]
    assert [d.cost for d in decisions] == pytest.approx([0.1, 0.2, 0.1, 0.1, 1.0, 0.2])
    assert decisions[1].to_dict()["refresh"] is True and decisions[1].to_dict()["cost"] == pytest.approx(0.2)
    assert "refresh" in decisions[1].reason and "refreshes in a row: retrain" in decisions[4].reason
    assert decisions[3].suppressed_by == "budget" and "retrain would exceed" in decisions[3].reason
    assert [d.state.refreshes_in_a_row for d in decisions] == [0, 1, 1, 1, 0, 1]
    assert decisions[-1].state.spent == pytest.approx(1.7)
    assert load_state(storage, uri).refreshes_in_a_row == 1
    again = decide(REFRESH, decisions[-1].state, Observation("w5", Q[5], frozenset({PERF})))
    assert (again.action, again.refresh, again.cost, again.state) == (Action.FINE_TUNE, True, 0.2,
                                                                        decisions[-1].state)


def test_decision_dict_is_plain():
    decision = decide(RULES, PolicyState(), Observation("w0", Q[0], frozenset({PERF, DATA})))
    d = decision.to_dict()
    assert d["action"] == "fine_tune"
    assert d["signals"] == [DATA, PERF]
    assert d["fired_rules"] == [PERF]


# --- the calibrated drop test ----------------------------------------------------------------------------------


def auc(value: float, se: float | None = 0.01) -> PerformanceSample:
    return PerformanceSample("auc", value, se, "max", 1000)


def rmse(value: float, se: float | None = 0.1) -> PerformanceSample:
    return PerformanceSample("rmse", value, se, "min", 500)


DROP = rules_only(rules=[TriggerRule((PERF,))], drop_test=DropTest(calibration_windows=2, allowance=1.0,
                                                                      threshold=4.0))


def run_metrics(policy: TriggerPolicy, samples: list) -> tuple[list[str], list[dict]]:
    state, actions, drops = PolicyState(), [], []
    for i, sample in enumerate(samples):
        decision = decide(policy, state, Observation(f"w{i}", str(i), frozenset(), sample))
        state = decision.state
        actions.append(decision.action.value)
        drops.append(decision.drop)
    return actions, drops


@pytest.mark.parametrize(
    ("samples", "expected"),
    [
        # calibration on the first two out-of-time windows, then noise-sized wobbles never fire
        ([auc(0.80), auc(0.82), auc(0.80), auc(0.79), auc(0.82), auc(0.80)], [N, N, N, N, N, N]),
        # a drop of ~5.7 standard errors (0.08 against sqrt(0.01^2 + 0.01^2 / 2)) fires in one window
        ([auc(0.80), auc(0.80), auc(0.72)], [N, N, F]),
        # a steady drop of ~2.4 standard errors accumulates: 1.4, 2.8, 4.2 -> fires in the third window
        ([auc(0.80), auc(0.80), auc(0.77), auc(0.77), auc(0.77)], [N, N, N, N, F]),
        # the same drop on a noisier (smaller) window never fires
        ([auc(0.80, 0.05), auc(0.80, 0.05), auc(0.77, 0.05), auc(0.77, 0.05), auc(0.77, 0.05)], [N] * 5),
        # no standard error, no verdict; and no labelled metric at all
        ([auc(0.80, None), auc(0.80, None), auc(0.50, None)], [N, N, N]),
        ([None, None, None], [N, N, N]),
        # smaller is better for RMSE: a rise is a drop in performance, a fall is not
        ([rmse(4.0), rmse(4.0), rmse(4.8)], [N, N, F]),
        ([rmse(4.0), rmse(4.0), rmse(3.0), rmse(3.0)], [N, N, N, N]),
    ],
)
def test_drop_test_table(samples, expected):
    actions, _ = run_metrics(DROP, samples)
    assert actions == expected


def test_a_retrain_starts_a_new_calibration_and_a_fine_tune_keeps_it():
    policy = rules_only(rules=[TriggerRule((PERF,))], max_consecutive_fine_tunes=1,
                        drop_test=DropTest(calibration_windows=1))
    samples = [auc(0.80), auc(0.70), auc(0.60), auc(0.60), auc(0.60)]
    actions, drops = run_metrics(policy, samples)
    # F: drop vs 0.80; the fine-tuned model keeps the 0.80 baseline -> R; the retrained one calibrates on 0.60
    assert actions == [N, F, R, N, N]
    assert drops[1]["baseline"] == pytest.approx(0.80) and drops[2]["baseline"] == pytest.approx(0.80)
    assert drops[3]["verdict"].startswith("calibrating") and drops[4]["verdict"] == "within noise"


def test_a_refresh_starts_a_new_calibration_and_a_routine_fine_tune_keeps_it():
    policy = TriggerPolicy(budget_share=None, cooldown_windows=0, drop_test=DropTest(calibration_windows=1))
    # a lasting change of difficulty (0.80 -> 0.70): one refresh, which then calibrates on the new level
    samples = [auc(0.80), auc(0.80), auc(0.70), auc(0.70), auc(0.70), auc(0.70)]
    state, decisions = PolicyState(), []
    for i, sample in enumerate(samples):
        decision = decide(policy, state, Observation(f"w{i}", str(i), frozenset(), sample))
        state, decisions = decision.state, [*decisions, decision]
    assert [d.action.value for d in decisions] == [F] * 6  # every window fine-tunes (routine or refresh)
    assert [d.refresh for d in decisions] == [False, False, True, False, False, False]
    assert decisions[1].drop["baseline"] == pytest.approx(0.80)  # the routine fine-tune kept the baseline
    assert decisions[3].drop["verdict"].startswith("calibrating")
    assert decisions[5].drop["baseline"] == pytest.approx(0.70) and decisions[5].drop["verdict"] == "within noise"
    # a further drop after the refresh retrains (one refresh before a retrain)
    decision = decide(policy, state, Observation("w6", "6", frozenset(), auc(0.60)))
    assert decision.action is Action.RETRAIN and decision.state.calibration == {}
    assert decision.state.refreshes_in_a_row == 0


def test_drop_test_function_is_pure_and_reports_its_numbers():
    test = DropTest(calibration_windows=1)
    fired, details, cal = drop_test(test, {}, auc(0.8))
    assert not fired and details["verdict"] == "calibrating 1/1" and cal["values"] == [[0.8, 0.01]]
    fired, details, cal2 = drop_test(test, cal, auc(0.7))
    assert fired and details["z"] > 5 and details["drop"] == pytest.approx(0.1)
    assert cal["cusum"] == 0.0, "the input is not changed"
    # another metric starts a new calibration
    fired, details, _ = drop_test(test, cal2, rmse(3.0))
    assert not fired and details["verdict"].startswith("calibrating")


def test_min_drop_ignores_tiny_but_significant_drops():
    policy = rules_only(rules=[TriggerRule((PERF,))], drop_test=DropTest(calibration_windows=1, min_drop=0.02))
    actions, _ = run_metrics(policy, [auc(0.800, 0.001), auc(0.790, 0.001), auc(0.790, 0.001)])
    assert actions == [N, N, N]


def test_performance_sample_from_a_monitor_result():
    result = {"metric": "rmse", "value": 3.2, "standard_error": 0.1, "mode": "min", "rows": 90, "degraded": False}
    assert PerformanceSample.from_value(result) == PerformanceSample("rmse", 3.2, 0.1, "min", 90)
    assert PerformanceSample.from_value({"metric": "auc", "value": None}) is None
    with pytest.raises(MlopsConfigurationError):
        PerformanceSample("auc", 0.8, 0.01, "up")


def test_version_1_state_files_still_load(tmp_path):
    storage = LocalStorage()
    uri = str(tmp_path / "old.json")
    old = {"version": 1, "streaks": {PERF: 1}, "last_window_id": "w3", "last_window_end": "1982-12-31T00:00:00",
           "last_training_at": "1982-09-30T00:00:00", "trainings": ["1982-09-30T00:00:00"],
           "fine_tunes_in_a_row": 1, "history": [{"action": "fine_tune", "reason": "r", "window_id": "w2"}]}
    storage.write_bytes(uri, json.dumps(old).encode())
    state = load_state(storage, uri)
    assert state.fine_tunes_in_a_row == 1 and state.windows_seen == 0 and state.calibration == {}
    decision = decide(DEFAULT, state, Observation("w4", Q[4], frozenset()))
    assert decision.action is Action.FINE_TUNE and decision.state.windows_seen == 1
    storage.write_bytes(uri, json.dumps({**old, "version": 99}).encode())
    with pytest.raises(MlopsConfigurationError, match="version"):
        load_state(storage, uri)
