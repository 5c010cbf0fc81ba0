"""drift_monitor -> continual_learning with dag.test() on the real rainfall data and a real mlflow server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.dag, pytest.mark.integration, pytest.mark.slow]

DRIFT_URI = "mlops://drift/rainfall"
# The champion learns 1978-1980. 1981Q1 is ordinary weather; from late 1981 the columns change meaning
# (dew point and sea-level pressure swap their spread, the temperatures reorder), which the champion cannot follow.
TRAIN = {"window_start": "1978-01-01", "window_end": "1980-12-31", "epochs": 3, "processes": 1, "min_auc": 0.6}
QUIET = {"window_start": "1981-01-01", "window_end": "1981-03-31"}
SHIFTED = {"window_start": "1982-07-01", "window_end": "1982-09-30"}


def _dag(name: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / f"{name}.py"))
    assert bag.import_errors == {}
    return bag.dags[name]


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _xcom(dr, task_id: str):
    ti = next(t for t in dr.get_task_instances() if t.task_id == task_id)
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id=ti.task_id,
                                                 key="return_value").one_or_none()
        return None if row is None else XComModel.deserialize_value(row)


def _drift_events() -> list[dict]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = session.query(AssetModel).filter_by(uri=DRIFT_URI).one_or_none()
        if asset is None:
            return []
        return [dict(e.extra or {}) for e in session.query(AssetEvent).filter_by(asset_id=asset.id)
                .order_by(AssetEvent.id)]


def _policy_state_in_the_asset_store(state_uri: str) -> dict | None:
    import json

    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.utils.session import create_session

    with create_session() as session:
        asset = session.query(AssetModel).filter_by(uri=DRIFT_URI).one_or_none()
        if asset is None:
            return None
        from airflow_mlops.operators.drift import TriggerPolicyOperator

        key = TriggerPolicyOperator.state_key(state_uri)
        row = session.query(AssetStateStoreModel).filter_by(asset_id=asset.id, key=key).one_or_none()
        return None if row is None else json.loads(row.value)


def _clear_policy_state() -> None:
    from airflow.models.asset import AssetModel
    from airflow.models.asset_state_store import AssetStateStoreModel
    from airflow.utils.session import create_session

    with create_session() as session:
        for asset in session.query(AssetModel).filter_by(uri=DRIFT_URI):
            session.query(AssetStateStoreModel).filter_by(asset_id=asset.id).delete()


def test_shifted_window_fine_tunes_the_champion_and_a_quiet_one_does_not(airflow_db, mlflow_fresh, rainfall_source,
                                                                         tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_fresh.url)
    dr = _dag("train_pipeline").test(run_conf=TRAIN)
    assert str(dr.state) == "success", _states(dr)
    champion = client.get_model_version_by_alias("rainfall", "champion")
    versions_before = len(client.search_model_versions("name = 'rainfall'"))
    # Under the data folder: the policy operator refuses a state file outside its allowed root.
    state_uri = str(Path(os.environ["MLOPS_DATA_DIR"]) / "drift" / f"policy_state_{tmp_path.name}.json")
    _clear_policy_state()
    monitor = _dag("drift_monitor")
    events_before = len(_drift_events())

    # An unshifted window: the policy decides nothing, no drift event, no training.
    dr = monitor.test(run_conf={**QUIET, "source_uri": rainfall_source, "state_uri": state_uri})
    states = _states(dr)
    assert states["detect_drift"] == "success" and states["monitor_performance"] == "success", states
    assert states["trigger_policy"] == "skipped", states
    decision = _xcom(dr, "trigger_policy")
    assert decision["action"] == "none", decision
    # The drop test calibrates on the champion's first out-of-time window; the state lives in the drift Asset's
    # state store (AIP-103), not in the file.
    assert decision["drop_test"]["verdict"] == "calibrating 1/1", decision
    assert decision["state_store"].startswith("asset:"), decision
    stored = _policy_state_in_the_asset_store(state_uri)
    assert stored is not None and stored["windows_seen"] == 1 and stored["calibration"]["metric"] == "auc", stored
    assert not Path(state_uri).exists()
    assert len(_drift_events()) == events_before
    assert len(client.search_model_versions("name = 'rainfall'")) == versions_before

    # The shifted window: the champion's AUC falls, the policy asks for a fine-tune and emits the event.
    dr = monitor.test(run_conf={**SHIFTED, "source_uri": rainfall_source, "state_uri": state_uri})
    states = _states(dr)
    assert states["trigger_policy"] == "success", (_xcom(dr, "trigger_policy") or {}).get("drop_test")
    perf = _xcom(dr, "monitor_performance")
    # No fixed threshold: the monitor reports the AUC and its standard error, the policy's drop test judges it.
    assert not perf["degraded"] and perf["champion_version"] == str(champion.version), perf
    assert 0 < perf["standard_error"] < 0.2 and perf["mode"] == "max", perf
    events = _drift_events()
    assert len(events) == events_before + 1
    extra = events[-1]
    assert extra["action"] == "fine_tune" and "performance_drop" in extra["signals"], extra
    assert extra["drop_test"]["verdict"] == "dropped" and extra["drop_test"]["z"] >= 2, extra["drop_test"]
    assert extra["drift"]["current_rows"] == 92
    stored = _policy_state_in_the_asset_store(state_uri)
    assert stored["windows_seen"] == 2 and stored["training_windows"] == [2], stored
    assert [h["action"] for h in stored["history"]] == ["none", "fine_tune"]

    # continual_learning with the event's request (dag.test has no triggering event, so it comes as Params).
    request = {k: extra[k] for k in ("action", "source_uri", "window_start", "window_end")}
    dr = _dag("continual_learning").test(run_conf={**request, "epochs": 2})
    states = _states(dr)
    assert states["register"] == "success", states
    version = _xcom(dr, "register")["version"]
    mv = client.get_model_version("rainfall", version)
    assert mv.tags["lineage.parent.version"] == str(champion.version)
    assert '"action":"fine_tune"' in mv.tags["lineage.hyperparameters"]
    assert mv.tags["lineage.checkpoint.uri"] != champion.tags["lineage.checkpoint.uri"]
    # The training followed the budgeted plan: epochs as a maximum, early stopping on the window's newest rows.
    plan = _xcom(dr, "plan_training")
    assert 1 <= plan["epochs"] <= 2 and plan["samples"] <= plan["sample_budget"], plan
    assert plan["validation_rows"] > 0 and plan["early_stopping"]["time_column"] == "date", plan
    trained = _xcom(dr, "train")
    stop = trained["extra"]["early_stopping"]
    assert stop["monitor"] == "stop_val_loss" and stop["validation_rows"] == plan["validation_rows"], stop
    assert stop["reason"] in ("no_improvement", "max_epochs") and 1 <= stop["best_epoch"] <= stop["epochs_run"]
    assert trained["checkpoint_uri"] == mv.tags["lineage.checkpoint.uri"] == trained["best_checkpoint_uri"]
    run = client.get_run(trained["mlflow_run_id"])
    assert run.data.tags["mlops.early_stopping.reason"] == stop["reason"]
    assert run.data.metrics["early_stopping.best_epoch"] == stop["best_epoch"]
    assert '"early_stopping":{' in mv.tags["lineage.hyperparameters"].replace(" ", "")
