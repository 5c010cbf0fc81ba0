"""The multiclass (digits, a CNN of the user's own) and regression (diabetes) pipelines end to end with dag.test(),
through the stock operators: register, promote, batch inference equal to a direct model call, drift -> fine-tune."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.dag, pytest.mark.integration, pytest.mark.slow]


def _dags(file: str) -> dict:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags" / file))
    assert bag.import_errors == {}
    return bag.dags


def _states(dr) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dr.get_task_instances()}


def _xcom(dr, task_id: str):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id=task_id,
                                                 key="return_value").one_or_none()
        return None if row is None else XComModel.deserialize_value(row)


DIGITS_FACTORY = "models.digits_cnn:digits_cnn"


def _direct(client, name: str, version: str, rows: pd.DataFrame, task: str) -> np.ndarray:
    """The registered module called directly (torch forward + the task's transform), no package scoring code."""
    import torch

    from airflow_mlops.registry.packaging import load_registered

    module, meta = load_registered(client, name, version, allowed=[DIGITS_FACTORY])
    with torch.no_grad():
        raw = module(torch.tensor(rows[meta.features].to_numpy(dtype="float32")))
    if task == "multiclass":
        return torch.softmax(raw, dim=1).numpy()
    return raw.reshape(-1).numpy()


def test_regression_pipeline_registers_promotes_and_scores(airflow_db, mlflow_fresh, diabetes_source):
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    client = MlflowClient(mlflow_fresh.url)
    dags = _dags("diabetes.py")
    dr = dags["diabetes_train_pipeline"].test(run_conf={"epochs": 40, "processes": 1})
    assert str(dr.state) == "success", _states(dr)
    mv = client.get_model_version_by_alias("diabetes", "production")
    assert mv.tags["mlops.task"] == "regression"
    evaluation = _xcom(dr, "evaluate")
    assert set(evaluation["challenger"]) >= {"rmse", "mae", "r2"}
    assert float(mv.tags["eval.rmse"]) < 75, "better than predicting the mean (about 77)"
    assert _xcom(dr, "promote_staging")["checks"][0]["mode"] == "min", "RMSE is gated as lower-is-better"
    info = get_model_info(f"models:/diabetes/{mv.version}")
    assert info.signature.outputs.input_names() == ["prediction"]

    scored = dags["diabetes_batch_inference"].test(run_conf={"window_start": 9, "window_end": 11})
    assert str(scored.state) == "success", _states(scored)
    out = _xcom(scored, "score")
    predictions = pd.read_csv(out["output_uri"])
    source = pd.read_parquet(diabetes_source)
    rows = source[source["batch"].between(9, 11)].reset_index(drop=True)
    assert len(predictions) == len(rows) and predictions["row_id"].tolist() == rows["row_id"].tolist()
    assert (predictions["model_version"].astype(str) == mv.version).all()
    direct = _direct(client, "diabetes", mv.version, rows, "regression")
    assert np.allclose(predictions["prediction"].to_numpy(), direct, rtol=1e-5, atol=1e-4)
    pyfunc = mlflow.pyfunc.load_model(f"models:/diabetes/{mv.version}").predict(rows[info.signature.inputs.input_names()])
    assert np.allclose(pyfunc["prediction"].to_numpy(), direct, rtol=1e-5, atol=1e-4)


def test_multiclass_pipeline_with_a_user_cnn_then_drift_fine_tunes_it(airflow_db, mlflow_fresh, digits_source,
                                                                       tmp_path):
    import mlflow.pyfunc
    from mlflow import MlflowClient
    from mlflow.models import get_model_info

    client = MlflowClient(mlflow_fresh.url)
    dags = _dags("digits.py")
    dr = dags["digits_train_pipeline"].test(run_conf={"epochs": 6, "processes": 2, "window_start": 1,
                                                      "window_end": 10})
    assert str(dr.state) == "success", _states(dr)
    champion = client.get_model_version_by_alias("digits", "champion")
    tags = champion.tags
    assert tags["mlops.task"] == "multiclass"
    assert float(tags["eval.macro_f1"]) > 0.8 and float(tags["eval.accuracy"]) > 0.8
    assert "eval.error_rate" in tags and "eval.top_k_accuracy" in tags, "the user metric is recorded beside the standard ones"
    assert tags["lineage.framework.model_factory"] == "models.digits_cnn:digits_cnn"
    info = get_model_info(f"models:/digits/{champion.version}")
    outputs = info.signature.outputs.input_names()
    assert outputs[:2] == ["prediction", "probability"] and outputs[2:] == [f"probability_{k}" for k in range(10)]

    # Batch inference: one row per input row, class and class probabilities, equal to calling the module.
    scored = dags["digits_batch_inference"].test(run_conf={"window_start": 15, "window_end": 18})
    assert str(scored.state) == "success", _states(scored)
    predictions = pd.read_csv(_xcom(scored, "score")["output_uri"])
    source = pd.read_parquet(digits_source)
    rows = source[source["batch"].between(15, 18)].reset_index(drop=True)
    assert len(predictions) == len(rows)
    direct = _direct(client, "digits", champion.version, rows, "multiclass")
    assert np.allclose(predictions[[f"probability_{k}" for k in range(10)]].to_numpy(), direct, atol=1e-5)
    assert predictions["prediction"].tolist() == direct.argmax(axis=1).tolist()
    from airflow_mlops.factories import allowing_factories

    with allowing_factories([DIGITS_FACTORY]):  # a user factory loads only where it is allowed
        loaded = mlflow.pyfunc.load_model(f"models:/digits/{champion.version}")
    pyfunc = loaded.predict(rows[info.signature.inputs.input_names()])
    assert pyfunc["prediction"].tolist() == direct.argmax(axis=1).tolist()

    # A scanner change: from batch 15 the images arrive shifted one pixel to the right. The champion's macro-F1
    # collapses, the policy asks for a fine-tune, and continual learning starts from the champion's checkpoint.
    shifted = source.copy()
    late = (shifted["batch"] >= 15).to_numpy()
    pixels = [f"px_{i}" for i in range(64)]
    images = shifted.loc[late, pixels].to_numpy().reshape(-1, 8, 8)
    shifted.loc[late, pixels] = np.roll(images, 1, axis=2).reshape(-1, 64)
    shifted_uri = Path(os.environ["MLOPS_DATA_DIR"]) / "digits" / "digits_scanner_change.parquet"
    shifted.to_parquet(shifted_uri, index=False)
    state_uri = str(Path(os.environ["MLOPS_DATA_DIR"]) / "drift" / "digits_test_policy.json")
    monitor = dags["digits_drift_monitor"].test(run_conf={
        "source_uri": str(shifted_uri), "window_start": 15, "window_end": 18, "state_uri": state_uri})
    states = _states(monitor)
    assert states["trigger_policy"] == "success", states
    performance = _xcom(monitor, "monitor_performance")
    assert performance["metric"] == "macro_f1" and performance["degraded"], performance
    drift = _xcom(monitor, "detect_drift")
    assert drift["prediction_drift"] is not None
    decision = _xcom(monitor, "trigger_policy")
    assert decision["action"] == "fine_tune", decision

    request = {k: decision[k] for k in ("action", "source_uri", "window_start", "window_end")}
    learned = dags["digits_continual_learning"].test(run_conf={**request, "epochs": 15, "learning_rate": 0.003})
    states = _states(learned)
    assert states["promote_production"] == "success", states
    new = client.get_model_version_by_alias("digits", "champion")
    assert new.version != champion.version
    assert new.tags["lineage.parent.version"] == str(champion.version)
    assert client.get_model_version_by_alias("digits", "staging").version == new.version, "aliases move together"
    evaluation = _xcom(learned, "evaluate")
    assert evaluation["challenger"]["macro_f1"] > evaluation["champion"]["macro_f1"], evaluation


def test_a_model_whose_output_contradicts_the_declared_task_fails_clearly(airflow_db, mlflow_fresh, digits_source,
                                                                          tmp_path):
    """A 10-output CNN declared as a binary model: evaluation names both and nothing is registered."""
    from airflow_mlops.exceptions import ModelOutputError
    from airflow_mlops.operators.registry import EvaluateModelOperator
    from airflow_mlops.operators.training import DistributedTrainingOperator
    from airflow_mlops.training.config import TrainingConfig
    from airflow_mlops.training.launcher import TorchrunLauncher

    source = pd.read_parquet(digits_source)
    train_uri = str(tmp_path / "train.csv")
    source[source["batch"] <= 3].to_csv(train_uri, index=False)
    features = [f"px_{i}" for i in range(64)]
    config = TrainingConfig.from_dict({
        "dataset": {"train_uri": train_uri, "target_column": "digit", "feature_columns": features},
        "checkpoint_dir": str(tmp_path / "ckpt"), "output_dir": str(tmp_path / "out"),
        "model_factory": "models.digits_cnn:digits_cnn", "model_kwargs": {"out_features": 10},
        "task": "multiclass", "max_steps": 2, "checkpoint": {"every_n_steps": 1, "keep_best": 0,
                                                              "monitor": "train_loss"},
    })
    assert DistributedTrainingOperator.launcher_class is TorchrunLauncher
    result = TorchrunLauncher().run(config, pythonpath=[str(REPO / "include")])
    op = EvaluateModelOperator(task_id="evaluate", checkpoint_uri=result.checkpoint_uri, eval_uri=train_uri,
                               feature_columns=features, target_column="digit", model_name="contradiction",
                               learning_task="binary", pythonpath=[str(REPO / "include")],
                               allowed_factories=[DIGITS_FACTORY], allowed_root=str(tmp_path))
    with pytest.raises(ModelOutputError) as err:
        op.execute({})
    message = str(err.value)
    assert "binary" in message and "shape" in message and "10" in message and "multiclass" in message
