"""The drifted window the drift end-to-end tests check, and the policy state after the windows before it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: Three decades after the training window: the features and the champion's predictions have drifted.
DRIFT_CONF: dict = {"window_start": "1985-01-01", "window_end": "1985-12-31"}
#: The damping policy acts on data drift only after four drifted windows in a row: the three before this one.
EARLIER_DRIFTED_WINDOWS = (("1984-01-01", "1984-03-31"), ("1984-04-01", "1984-06-30"), ("1984-07-01", "1984-09-30"))


def policy_state_after_earlier_windows(uri: str | Path) -> str:
    """The policy state drift_monitor would have saved after monitoring the earlier windows (the DAG's policy)."""
    from airflow_mlops.drift.policy import Observation, PolicyState, TriggerPolicy, decide, save_state
    from airflow_mlops.hooks.storage import get_storage

    spec = importlib.util.spec_from_file_location("drift_monitor_dag_state", REPO / "dags" / "drift_monitor.py")
    dag_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dag_module)
    policy = TriggerPolicy.from_dict(dag_module.POLICY)
    state = PolicyState()
    for start, end in EARLIER_DRIFTED_WINDOWS:
        decision = decide(policy, state, Observation(window_id=f"{start}/{end}", window_end=end,
                                                     signals=frozenset({"data_drift", "prediction_drift"})))
        assert not decision.triggered
        state = decision.state
    uri = str(uri)
    save_state(get_storage(uri), uri, state)
    return uri
