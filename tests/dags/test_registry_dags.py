"""Promotion, rollback and batch inference through the reference DAGs (dag.test, real mlflow server)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.dag, pytest.mark.integration]


def _dag(file: str, dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / file))
    assert bag.import_errors == {}
    return bag.dags[dag_id]


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_rollback_after_bad_promotion_then_batch_inference_uses_it(airflow_db, mlflow_fresh, rainfall_source):
    from mlflow import MlflowClient

    from airflow_mlops.registry.service import RegistryService

    client = MlflowClient(mlflow_fresh.url)
    service = RegistryService(client)
    train = _dag("train_pipeline.py", "train_pipeline")
    conf = {"epochs": 1, "processes": 2, "min_auc": 0.5}
    first = train.test(run_conf={**conf, "window_start": "1960-01-01", "window_end": "1962-12-31"})
    assert str(first.state) == "success", _states(first)
    v_good = client.get_model_version_by_alias("rainfall", "production").version
    assert client.get_model_version_by_alias("rainfall", "champion").version == v_good
    assert client.get_model_version_by_alias("rainfall", "staging").version == v_good

    second = train.test(run_conf={**conf, "window_start": "1963-01-01", "window_end": "1964-12-31"})
    assert str(second.state) == "success", _states(second)
    v_new = max(client.search_model_versions("name = 'rainfall'"), key=lambda v: int(v.version)).version
    assert v_new != v_good
    if client.get_model_version_by_alias("rainfall", "production").version != v_new:
        # The gate kept the old champion; make the bad promotion by hand, as an operator mistake would.
        service.promote("rainfall", v_new, ["production", "champion"], "manual/mistake", "forced")
    assert client.get_model_version_by_alias("rainfall", "production").version == v_new

    rollback = _dag("model_rollback.py", "model_rollback").test(run_conf={"reason": "v_new misbehaves"})
    assert str(rollback.state) == "success", _states(rollback)
    assert client.get_model_version_by_alias("rainfall", "production").version == v_good
    assert client.get_model_version_by_alias("rainfall", "champion").version == v_good
    last = service.alias_history("rainfall", "production")[-1]
    assert (last["action"], last["from_version"], last["to_version"]) == ("rollback", v_new, v_good)
    assert last["reason"] == "v_new misbehaves"

    scored = _dag("batch_inference.py", "batch_inference").test(
        run_conf={"window_start": "1965-01-01", "window_end": "1965-01-31"})
    assert str(scored.state) == "success", _states(scored)
    out = scored.get_task_instance("score").xcom_pull(task_ids="score")
    assert out["model_version"] == v_good and out["rows"] == 31
    predictions = pd.read_csv(out["output_uri"])
    assert set(predictions["model_version"].astype(str)) == {v_good}
    assert predictions["probability"].between(0, 1).all()

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        extras = session.scalars(
            select(AssetEvent.extra).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == "mlops://models/rainfall/production")
        ).all()
    actions = [e.get("action") for e in extras]
    assert "rollback" in actions and "promote" in actions
