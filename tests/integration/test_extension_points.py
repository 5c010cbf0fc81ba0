"""Extension points a data engineer overrides instead of patching: metrics, the gate, extra validation checks,
the training config and the launcher. Each override is exercised against the real parts it plugs into."""

from __future__ import annotations

import uuid
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.exceptions import DataValidationError
from airflow_mlops.operators.registry import EvaluateModelOperator, PromoteModelOperator
from airflow_mlops.operators.training import DistributedTrainingOperator
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.registry.gate import GateDecision
from airflow_mlops.training.launcher import TorchrunLauncher

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["temperature", "dew_point", "sea_level_pressure", "visibility"]


class _TI:
    task_id = "t"
    dag_id = "extension_points"
    try_number = 1
    map_index = -1

    def __init__(self) -> None:
        self.pushed: dict = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


class _Dag:
    dag_id = "extension_points"


def _context() -> dict:
    return {"ti": _TI(), "run_id": f"manual__{uuid.uuid4().hex[:8]}", "dag": _Dag(), "outlet_events": {}}


class RecordingLauncher(TorchrunLauncher):
    """A launcher of the user's: here, torchrun with a record of every run it started."""

    runs: list = []

    def run(self, config, **kwargs):
        type(self).runs.append(config)
        return super().run(config, **kwargs)


class SmallTraining(DistributedTrainingOperator):
    launcher_class = RecordingLauncher

    def build_config(self, context, output_dir):
        config = super().build_config(context, output_dir)
        config.max_steps = 3  # the team's rule for smoke runs
        return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory, rainfall_source):
    folder = tmp_path_factory.mktemp("ext")
    rows = pd.read_parquet(rainfall_source).iloc[:400]
    train_uri, eval_uri = str(folder / "train.csv"), str(folder / "eval.csv")
    rows.iloc[:300].to_csv(train_uri, index=False)
    rows.iloc[300:].to_csv(eval_uri, index=False)
    op = SmallTraining(task_id="train", train_uri=train_uri, eval_uri=eval_uri, target_column="rain",
                       feature_columns=FEATURES, checkpoint_dir=str(folder / "ckpt"), epochs=5,
                       allowed_root=str(folder))
    result = op.execute(_context())
    return {"result": result, "train_uri": train_uri, "eval_uri": eval_uri, "folder": folder}


def test_the_launcher_and_the_config_are_swapped_by_subclassing(trained):
    assert RecordingLauncher.runs and RecordingLauncher.runs[-1].max_steps == 3
    assert trained["result"]["steps"] == 3


def test_compute_metrics_override_scores_both_models(trained, mlflow_fresh):
    class BusinessEvaluation(EvaluateModelOperator):
        def compute_metrics(self, task, y_true, scores):
            metrics = super().compute_metrics(task, y_true, scores)
            metrics["missed_rain_cost"] = float(((scores < 0.5) & (y_true == 1)).sum() * 3.0)
            return metrics

    op = BusinessEvaluation(task_id="evaluate", checkpoint_uri=trained["result"]["checkpoint_uri"],
                            eval_uri=trained["eval_uri"], feature_columns=FEATURES, target_column="rain",
                            model_name=f"ext-{uuid.uuid4().hex[:6]}", allowed_root=str(trained["folder"]))
    out = op.execute(_context())
    assert out["task"] == "binary" and out["eval_rows"] == 100
    assert "missed_rain_cost" in out["challenger"] and "auc" in out["challenger"]


def test_decide_gate_override_decides_and_the_registry_records_it(mlflow_fresh):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_fresh.url)
    name = f"ext-{uuid.uuid4().hex[:6]}"
    client.create_registered_model(name)
    run = client.create_run(client.create_experiment(name))
    version = client.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id).version

    class FourEyes(PromoteModelOperator):
        def decide_gate(self, challenger, champion, policy):
            return GateDecision(False, "rejected: the fraud team signs off every first model")

    op = FourEyes(task_id="promote", model_name=name, version=version, gate={"metric": "auc"},
                  evaluation={"challenger": {"auc": 0.99}, "champion": None, "champion_version": None},
                  aliases=["staging"], mlflow_conn_id="mlflow_default")  # the fixture points it at its server
    from airflow.sdk.exceptions import AirflowSkipException

    with pytest.raises(AirflowSkipException, match="fraud team"):
        op.execute(_context())
    mv = client.get_model_version(name, version)
    assert mv.tags["mlops.gate.decision"] == "reject" and "fraud team" in mv.tags["mlops.gate.reason"]
    assert not client.get_registered_model(name).aliases


def test_extra_checks_after_the_suite_fail_and_quarantine_the_batch(tmp_path, rainfall_source):
    data = tmp_path / "data"
    data.mkdir()
    batch = data / "batch.parquet"
    pd.read_parquet(rainfall_source).iloc[1000:1060].to_parquet(batch, index=False)

    class NoDryWeeks(DataValidationOperator):
        def extra_checks(self, df):
            dry = int(df["rain"].rolling(7).sum().eq(0).sum())
            return [{"expectation": "no_week_without_rain", "column": "rain", "observed_value": dry}] if dry else []

    op = NoDryWeeks(task_id="validate", data_path=str(batch), allowed_root=str(data),
                    suite_path=str(REPO / "include" / "expectations" / "rainfall.json"),
                    quarantine_root=str(tmp_path / "quarantine"))
    with pytest.raises(DataValidationError, match="no_week_without_rain"):
        op.execute(_context())
    assert any((tmp_path / "quarantine").rglob("reason.json"))
