"""drift_monitor -> continual_learning with dag.test() on the real rainfall data and a real mlflow server."""

from __future__ import annotations

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


def test_shifted_window_fine_tunes_the_champion_and_a_quiet_one_does_not(airflow_db, mlflow_fresh, rainfall_source,
                                                                         tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_fresh.url)
    dr = _dag("train_pipeline").test(run_conf=TRAIN)
    assert str(dr.state) == "success", _states(dr)
    champion = client.get_model_version_by_alias("rainfall", "champion")
    versions_before = len(client.search_model_versions("name = 'rainfall'"))
    state_uri = str(tmp_path / "policy_state.json")
    monitor = _dag("drift_monitor")
    events_before = len(_drift_events())

    # An unshifted window: the policy decides nothing, no drift event, no training.
    dr = monitor.test(run_conf={**QUIET, "source_uri": rainfall_source, "state_uri": state_uri})
    states = _states(dr)
    assert states["detect_drift"] == "success" and states["monitor_performance"] == "success", states
    assert states["trigger_policy"] == "skipped", states
    decision = _xcom(dr, "trigger_policy")
    assert decision["action"] == "none", decision
    assert len(_drift_events()) == events_before
    assert len(client.search_model_versions("name = 'rainfall'")) == versions_before

    # The shifted window: the champion's AUC falls, the policy asks for a fine-tune and emits the event.
    dr = monitor.test(run_conf={**SHIFTED, "source_uri": rainfall_source, "state_uri": state_uri})
    states = _states(dr)
    assert states["trigger_policy"] == "success", states
    perf = _xcom(dr, "monitor_performance")
    assert perf["degraded"] and perf["champion_version"] == str(champion.version), perf
    events = _drift_events()
    assert len(events) == events_before + 1
    extra = events[-1]
    assert extra["action"] == "fine_tune" and "performance_drop" in extra["signals"], extra
    assert extra["drift"]["current_rows"] == 92
    assert Path(state_uri).exists(), "the policy state is persisted"

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
