"""TrainingConfig, DatasetSpec and CheckpointPolicy: validation on construction and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.training.config import (
    CheckpointPolicy,
    DatasetSpec,
    LrSchedule,
    MonitorMode,
    Strategy,
    Task,
    TrainingConfig,
)


def dataset(**kw):
    base = {"train_uri": "/data/train.csv", "target_column": "y", "feature_columns": ["a", "b"],
            "eval_uri": "/data/eval.parquet"}
    return DatasetSpec(**(base | kw))


def config(**kw):
    base = {"dataset": dataset(), "checkpoint_dir": "/tmp/ckpt", "output_dir": "/tmp/out"}
    return TrainingConfig(**(base | kw))


def test_defaults_and_enums_from_strings():
    cfg = config(task="regression", strategy="FSDP", lr_schedule="cosine")
    assert cfg.task is Task.REGRESSION
    assert cfg.strategy is Strategy.FSDP
    assert cfg.lr_schedule is LrSchedule.COSINE
    assert cfg.checkpoint.every_n_epochs == 1 and cfg.checkpoint.every_n_steps is None
    assert cfg.checkpoint.mode is MonitorMode.MIN
    assert cfg.world_size == 1


def test_json_round_trip():
    cfg = config(model_kwargs={"hidden_sizes": [8, 4]}, checkpoint=CheckpointPolicy(every_n_steps=5, keep_last=3,
                 monitor="val_auc", mode="max", async_save=True), nproc_per_node=2, mlflow_run_id="abc",
                 protected_checkpoints=["/tmp/ckpt/step-0000000001"])
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["checkpoint"]["mode"] == "max" and data["task"] == "binary"
    again = TrainingConfig.from_dict(data)
    assert again == cfg


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch_size"),
        ({"nproc_per_node": 0}, "nproc_per_node"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"learning_rate": float("nan")}, "learning_rate"),
        ({"task": "ranking"}, "task"),
        ({"strategy": "zero3"}, "strategy"),
        ({"model_factory": "not a path"}, "model_factory"),
        ({"model_factory": "module_without_function"}, "model_factory"),
        ({"nnodes": 2}, "rendezvous"),
        ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "h:1"}, "node_rank"),
        ({"rdzv_endpoint": "no-port"}, "rdzv_endpoint"),
        ({"checkpoint_dir": " "}, "checkpoint_dir"),
        ({"dataset": dataset(eval_uri=None)}, "evaluation set"),
        ({"protected_checkpoints": "/one/path"}, "protected_checkpoints"),
        ({"seed": True}, "seed"),
    ],
)
def test_invalid_training_config(kwargs, needle):
    with pytest.raises(MlopsConfigurationError, match=needle) as err:
        config(**kwargs)
    assert "Expected:" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_no_eval_set_is_fine_with_a_training_monitor():
    cfg = config(dataset=dataset(eval_uri=None), checkpoint=CheckpointPolicy(monitor="train_loss"))
    assert cfg.dataset.eval_uri is None


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"train_uri": "/data/train.json"}, "train_uri"),
        ({"eval_uri": "s3://b/eval.txt"}, "eval_uri"),
        ({"feature_columns": []}, "feature_columns"),
        ({"feature_columns": "a,b"}, "feature_columns"),
        ({"feature_columns": ["a", "a"]}, "repeats"),
        ({"feature_columns": ["a", "y"]}, "target"),
        ({"target_column": ""}, "target_column"),
    ],
)
def test_invalid_dataset(kwargs, needle):
    with pytest.raises(MlopsConfigurationError, match=needle):
        dataset(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"every_n_steps": 5, "every_n_epochs": 1}, "twice"),
        ({"every_n_steps": 0}, "every_n_steps"),
        ({"keep_last": 1}, "keep_last"),
        ({"keep_best": -1}, "keep_best"),
        ({"mode": "biggest"}, "mode"),
        ({"monitor": ""}, "monitor"),
    ],
)
def test_invalid_checkpoint_policy(kwargs, needle):
    with pytest.raises(MlopsConfigurationError, match=needle):
        CheckpointPolicy(**kwargs)


def test_from_dict_rejects_unknown_and_missing_keys():
    data = config().to_dict()
    with pytest.raises(MlopsConfigurationError, match="Unknown training config keys"):
        TrainingConfig.from_dict(data | {"epoch": 3})
    with pytest.raises(MlopsConfigurationError, match="Unknown dataset keys"):
        TrainingConfig.from_dict(data | {"dataset": data["dataset"] | {"label": "y"}})
    del data["output_dir"]
    with pytest.raises(MlopsConfigurationError, match="Incomplete TrainingConfig"):
        TrainingConfig.from_dict(data)
