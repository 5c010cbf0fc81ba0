"""DistributedTrainingOperator: __init__ only assigns, rendered values are validated into a TrainingConfig."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.operators.training import DistributedTrainingOperator, default_checkpoint_dir
from airflow_mlops.training.config import Strategy, Task


def context(map_index=-1):
    ti = SimpleNamespace(dag_id="train_pipeline", task_id="train", map_index=map_index, xcom_push=lambda **kw: None)
    return {"ti": ti, "run_id": "manual__2024-05-01T00:00:00+00:00"}


def operator(**kw):
    base = {"task_id": "train", "train_uri": "/d/train.csv", "eval_uri": "/d/eval.csv", "target_column": "y",
            "feature_columns": "a, b"}
    return DistributedTrainingOperator(**(base | kw))


def test_init_keeps_templates_unvalidated():
    op = operator(epochs="{{ params.epochs }}", strategy="{{ params.strategy }}")
    assert op.epochs == "{{ params.epochs }}"
    assert "epochs" in op.template_fields and "model_kwargs" in op.template_fields


def test_build_config_from_rendered_values(monkeypatch):
    monkeypatch.setenv("MLOPS_CHECKPOINT_BASE", "s3://bucket/ckpt")
    op = operator(epochs="3", nproc_per_node="2", strategy="fsdp", learning_task="multiclass",
                  model_kwargs={"out_features": 3}, checkpoint_policy={"every_n_steps": 10, "keep_last": 3},
                  training_options={"max_steps": 50, "lr_schedule": "cosine"})
    cfg = op.build_config(context(), "/tmp/out")
    assert cfg.epochs == 3 and cfg.nproc_per_node == 2 and cfg.max_steps == 50
    assert cfg.strategy is Strategy.FSDP and cfg.task is Task.MULTICLASS
    assert cfg.dataset.feature_columns == ["a", "b"]
    assert cfg.checkpoint.every_n_steps == 10
    assert cfg.checkpoint_dir == "s3://bucket/ckpt/train_pipeline/manual__2024-05-01T00_00_00_00_00/train"


def test_checkpoint_dir_is_stable_per_task_and_map_index(tmp_path):
    op = operator(checkpoint_base=str(tmp_path))
    first = op.build_config(context(), "/tmp/out").checkpoint_dir
    again = op.build_config(context(), "/tmp/out2").checkpoint_dir
    assert first == again == default_checkpoint_dir(str(tmp_path), "train_pipeline",
                                                    "manual__2024-05-01T00:00:00+00:00", "train")
    assert op.build_config(context(map_index=0), "/tmp/out").checkpoint_dir.endswith("train_0")
    assert operator(checkpoint_dir="/explicit").build_config(context(), "/o").checkpoint_dir == "/explicit"


def test_invalid_rendered_values_fail_in_execute_not_init():
    op = operator(epochs="0")
    with pytest.raises(MlopsConfigurationError, match="epochs"):
        op.build_config(context(), "/tmp/out")
    with pytest.raises(MlopsConfigurationError, match="Unknown training config keys"):
        operator(training_options={"epoch": 2}).build_config(context(), "/tmp/out")


@pytest.mark.parametrize("rendered", [{"patience": 3, "validation_rows": 20, "time_column": "date"},
                                      "{'patience': 3, 'validation_rows': 20, 'time_column': 'date'}"])
def test_early_stopping_from_rendered_values(rendered):
    cfg = operator(early_stopping=rendered).build_config(context(), "/tmp/out")
    assert cfg.early_stopping.patience == 3 and cfg.early_stopping.validation_rows == 20
    assert cfg.early_stopping.time_column == "date" and cfg.early_stopping.restore_best
    assert "early_stopping" in DistributedTrainingOperator.template_fields
    for off in (None, "None", ""):
        assert operator(early_stopping=off).build_config(context(), "/tmp/out").early_stopping is None
    with pytest.raises(MlopsConfigurationError, match="patience"):
        operator(early_stopping={"patience": 0}).build_config(context(), "/tmp/out")
