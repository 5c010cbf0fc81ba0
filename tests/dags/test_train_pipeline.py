"""train_pipeline end to end with dag.test() against a real mlflow server on loopback."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.dag, pytest.mark.integration]

WINDOW = {"window_start": "1949-01-01", "window_end": "1951-12-31", "epochs": 2, "processes": 2}


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / "train_pipeline.py"))
    assert bag.import_errors == {}
    return bag.dags["train_pipeline"]


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def test_train_pipeline_registers_champion_with_lineage(airflow_db, mlflow_fresh, rainfall_source):
    from mlflow import MlflowClient

    dr = _dag().test(run_conf=WINDOW)
    states = _states(dr)
    assert str(dr.state) == "success", states
    client = MlflowClient(mlflow_fresh.url)
    mv = client.get_model_version_by_alias("rainfall", "champion")
    tags = mv.tags
    for key in ("lineage.data.digest", "lineage.code.git_commit", "lineage.hyperparameters",
                "lineage.framework.torch", "lineage.framework.python", "lineage.packages.artifact",
                "lineage.orchestration.dag_id", "lineage.orchestration.run_id", "lineage.checkpoint.uri"):
        assert tags.get(key), f"missing {key}"
    assert tags["lineage.orchestration.dag_id"] == "train_pipeline"
    assert tags["lineage.orchestration.run_id"] == dr.run_id
    assert tags["lineage.data.digest"].startswith("sha256:")
    assert '"epochs":2' in tags["lineage.hyperparameters"]
    assert float(tags["eval.auc"]) > 0.7, "a real model on real data should beat chance clearly"
    artifacts = {a.path for a in client.list_artifacts(mv.run_id, "lineage")}
    assert {"lineage/packages.txt", "lineage/lineage.json"} <= artifacts
    packages = client.download_artifacts(mv.run_id, "lineage/packages.txt")
    assert "torch==" in Path(packages).read_text()
    assert tags["mlops.task"] == "binary"
    # Lineage MLflow's own UI shows: the run's datasets, the version's description, the model's pointer to the page.
    run = client.get_run(mv.run_id)
    contexts = {next(t.value for t in d.tags if t.key == "mlflow.data.context") for d in run.inputs.dataset_inputs}
    assert contexts == {"training", "evaluation"}, run.inputs.dataset_inputs
    training = next(d.dataset for d in run.inputs.dataset_inputs
                    if any(t.value == "training" for t in d.tags))
    assert training.digest == tags["lineage.data.digest"].split(":")[-1][:8]
    assert "rows" in mv.description and tags["lineage.code.git_commit"] in mv.description
    assert "/mlops/models/rainfall" in client.get_registered_model("rainfall").description
    # The version loads back through MLflow's pyfunc (rebuilt from weights, no pickle) and answers with the
    # probability of rain; the module rebuilt by the package gives the same numbers.
    import mlflow.pyfunc
    import numpy as np
    import torch

    from airflow_mlops.registry.packaging import load_registered

    rows = pd.read_parquet(rainfall_source).head(5)
    features = [c.name for c in mv_signature_inputs(client, mv)]
    answer = mlflow.pyfunc.load_model("models:/rainfall@champion").predict(rows[features])
    assert list(answer.columns) == ["probability", "prediction"]
    module, meta = load_registered(client, "rainfall", mv.version)
    with torch.no_grad():
        direct = torch.sigmoid(module(torch.tensor(rows[features].to_numpy(dtype="float32")))).numpy().ravel()
    assert np.allclose(answer["probability"].to_numpy(), direct, atol=1e-6)
    assert meta.task == "binary" and meta.features == features


def test_bad_batch_stops_pipeline_before_training(airflow_db, mlflow_fresh, rainfall_source):
    from mlflow import MlflowClient
    client = MlflowClient(mlflow_fresh.url)
    before = len(client.search_model_versions("name = 'rainfall'"))
    bad = pd.read_parquet(rainfall_source)
    bad.loc[bad.index[:40], "rain"] = 7  # labels outside {0, 1}
    bad_path = Path(os.environ["MLOPS_DATA_DIR"]) / "bad" / "rainfall_bad.parquet"
    bad_path.parent.mkdir(parents=True, exist_ok=True)
    bad.to_parquet(bad_path, index=False)
    original = bad_path.read_bytes()

    dr = _dag().test(run_conf={**WINDOW, "source_uri": str(bad_path)})
    states = _states(dr)
    assert str(dr.state) == "failed"
    assert states["validate"] == "failed"
    for task in ("train", "evaluate", "register", "promote_staging", "promote_production"):
        assert states[task] in ("upstream_failed", "None", "skipped"), states
    assert len(client.search_model_versions("name = 'rainfall'")) == before, "no new model version"
    assert bad_path.read_bytes() == original, "the original batch must stay untouched"
    quarantine = Path(os.environ["MLOPS_DATA_DIR"]) / "quarantine"
    assert any(quarantine.rglob("reason.json")), "the failing batch is quarantined with its reason"


def mv_signature_inputs(client, mv):
    """The input columns of the version's signature, as MLflow recorded them."""
    from mlflow.models import get_model_info

    return get_model_info(f"models:/{mv.name}/{mv.version}").signature.inputs.inputs
