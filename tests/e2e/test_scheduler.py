"""The real scheduler end to end: trigger train_pipeline through the REST API with Params; drift schedules
continual_learning through an Asset event, which changes the champion."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mlops_testkit.drift_state import DRIFT_CONF, policy_state_after_earlier_windows

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL = "rainfall"
#: Small enough for two cores: three years of days, one epoch, two torchrun processes.
TRAIN_CONF = {"window_start": "1950-01-01", "window_end": "1952-12-31", "epochs": 1, "processes": 2,
              "batch_size": 128, "min_auc": 0.5}


def _champion(client):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(MODEL, "champion")
    except MlflowException:
        return None


def test_train_pipeline_triggered_through_the_rest_api(airflow_stack, mlflow_client):
    api = airflow_stack
    dag = api.wait_for_dag("train_pipeline")
    assert {t["name"] for t in dag["tags"]} >= {"mlops"}
    api.unpause("train_pipeline")
    before = _champion(mlflow_client)

    run_id, run = api.run_and_wait("train_pipeline", TRAIN_CONF, timeout=900)

    assert run["conf"] == TRAIN_CONF
    states = api.task_states("train_pipeline", run_id)
    assert set(states.values()) <= {"success", "skipped"}, states  # skipped: the human-approval branch
    assert all(states[t] == "success" for t in ("train", "register", "promote_production")), states
    champion = _champion(mlflow_client)
    assert champion is not None and (before is None or champion.version != before.version)
    tags = champion.tags
    # The Params of the trigger reached the training run and the lineage of the registered version.
    assert tags["lineage.orchestration.dag_id"] == "train_pipeline"
    assert tags["lineage.orchestration.run_id"] == run_id
    assert '"epochs":1' in tags["lineage.hyperparameters"].replace(" ", "")
    assert "1950-01-01" in tags["lineage.hyperparameters"]

    # Operator extra links resolve through the API server to the MLflow UI.
    links = api.request("GET", f"/api/v2/dags/train_pipeline/dagRuns/{run_id}/taskInstances/register/links")[
        "extra_links"]
    assert any(str(url).startswith(api.mlflow_url) and f"/models/{MODEL}/versions/{champion.version}" in str(url)
               for url in links.values()), links
    # The plugin's JSON API (served by the same API server) shows the new champion.
    model = api.request("GET", f"/mlops/api/models/{MODEL}")
    assert model["environments"]["champion"] == champion.version


def test_human_approval_gates_production(airflow_stack, mlflow_client, champion):
    """With the Param require_approval, staging moves at once and production only after Approve in the UI/API."""
    api = airflow_stack
    before = _champion(mlflow_client)
    assert before is not None
    # The same Params and seed train the same weights, so the gate's "not worse than the champion" holds.
    run_id = api.trigger("train_pipeline", {**TRAIN_CONF, "require_approval": True})
    deadline = time.monotonic() + 900
    state = None
    while time.monotonic() < deadline:
        state = api.task_states("train_pipeline", run_id).get("approve_production")
        if state in ("deferred", "awaiting_input") or api.request(
                "GET", f"/api/v2/dags/train_pipeline/dagRuns/{run_id}")["state"] in ("success", "failed"):
            break
        time.sleep(3)
    assert state in ("deferred", "awaiting_input"), api.explain("train_pipeline", run_id)
    # Answer as a person would, not within the second the task paused: Airflow 3.3.2 marks the task failed when
    # the answer resumes it before the executor has reported the paused process as finished.
    time.sleep(10)
    assert api.task_states("train_pipeline", run_id)["approve_production"] in ("deferred", "awaiting_input")
    staged = mlflow_client.get_model_version_by_alias(MODEL, "staging")
    assert staged.version != before.version
    assert mlflow_client.get_model_version_by_alias(MODEL, "production").version == before.version

    api.request("PATCH", f"/api/v2/dags/train_pipeline/dagRuns/{run_id}/taskInstances/approve_production/-1/"
                "hitlDetails", json={"chosen_options": ["Approve"]})
    run = api.wait_for_run("train_pipeline", run_id, timeout=300)
    assert run["state"] == "success", api.explain("train_pipeline", run_id)
    assert api.task_states("train_pipeline", run_id)["promote_production"] == "success"
    assert mlflow_client.get_model_version_by_alias(MODEL, "production").version == staged.version
    assert mlflow_client.get_model_version_by_alias(MODEL, "champion").version == staged.version


DRIFT_DAGS = [REPO / "dags" / "drift_monitor.py", REPO / "dags" / "continual_learning.py"]


@pytest.mark.skipif(not all(p.exists() for p in DRIFT_DAGS), reason="drift_monitor / continual_learning not present")
def test_drift_event_schedules_continual_learning_which_changes_the_champion(airflow_stack, mlflow_client,
                                                                             champion, tmp_path):
    api = airflow_stack
    for dag_id in ("drift_monitor", "continual_learning"):
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)
    # Unpaused, drift_monitor also gets its scheduled run (see the test below); let it and what it triggers finish.
    api.settle(("drift_monitor", "continual_learning"))
    before = _champion(mlflow_client)
    assert before is not None
    known = {r["dag_run_id"] for r in api.runs("continual_learning")}

    # Under the data folder: the policy operator refuses a state file outside its allowed root.
    state_uri = policy_state_after_earlier_windows(
        Path(os.environ["MLOPS_DATA_DIR"]) / "drift" / f"e2e_policy_state_{tmp_path.name}.json")
    run_id, _ = api.run_and_wait("drift_monitor", {**DRIFT_CONF, "state_uri": state_uri}, timeout=900)
    assert set(api.task_states("drift_monitor", run_id).values()) <= {"success", "skipped"}

    deadline = time.monotonic() + 180
    new_runs: list[dict] = []
    while not new_runs and time.monotonic() < deadline:
        new_runs = [r for r in api.runs("continual_learning") if r["dag_run_id"] not in known]
        time.sleep(3)
    assert new_runs, "the drift Asset event did not schedule continual_learning"
    run = new_runs[0]
    assert run["run_type"] == "asset_triggered"
    run = api.wait_for_run("continual_learning", run["dag_run_id"], timeout=900)
    assert run["state"] == "success", api.explain("continual_learning", run["dag_run_id"])

    after = _champion(mlflow_client)
    assert after is not None and after.version != before.version
    assert after.tags.get("lineage.parent.version") == before.version  # fine-tuned from the old champion
    history = api.request("GET", f"/mlops/api/models/{MODEL}")["alias_history"]
    assert (history[-1]["from_version"], history[-1]["to_version"]) == (before.version, after.version)


def test_scheduled_drift_monitor_run_succeeds(airflow_stack, champion):
    """Unpaused, drift_monitor gets a scheduled run for the quarter that just ended (replayed 40 years back into the
    bundled data) and it succeeds: the window follows the run's data interval, no Params needed."""
    api = airflow_stack
    api.wait_for_dag("drift_monitor")
    api.unpause("drift_monitor")  # (the drift test above may have unpaused it already: its scheduled run counts)
    deadline = time.monotonic() + 240
    scheduled: list[dict] = []
    while not scheduled and time.monotonic() < deadline:
        scheduled = [r for r in api.runs("drift_monitor") if r["run_type"] == "scheduled"]
        time.sleep(3)
    assert scheduled, "unpausing drift_monitor created no scheduled run"
    run = scheduled[0]
    assert run["data_interval_start"] < run["data_interval_end"], run
    run = api.wait_for_run("drift_monitor", run["dag_run_id"], timeout=900)
    assert run["state"] == "success", api.explain("drift_monitor", run["dag_run_id"])
    window = api.request("GET", f"/api/v2/dags/drift_monitor/dagRuns/{run['dag_run_id']}/taskInstances/"
                         "prepare_current/xcomEntries/return_value")["value"]
    start = run["data_interval_start"][:10]
    assert window["start"] < start and window["start"][5:] == start[5:], (window, start)
    api.settle(("drift_monitor", "continual_learning"))  # what the scheduled run triggered, before other tests
