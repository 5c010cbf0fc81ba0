"""torchrun end to end on CPU (gloo): two processes, checkpoints, resume after a kill, corruption, two nodes, FSDP."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from airflow_mlops.checkpoints import CheckpointManager, load_model, read_manifest
from airflow_mlops.checkpoints.manifest import MANIFEST_NAME
from airflow_mlops.checkpoints.state import MODEL_FILE
from airflow_mlops.exceptions import TrainingError
from airflow_mlops.training.config import CheckpointPolicy, DatasetSpec, TrainingConfig
from airflow_mlops.training.launcher import TorchrunLauncher, free_port

pytestmark = pytest.mark.integration

FEATURES = ["f0", "f1", "f2", "f3"]


def make_dataset(root: Path, rows: int = 240, seed: int = 0) -> DatasetSpec:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES))) * [1.0, 3.0, 0.5, 10.0] + [0.0, 5.0, -1.0, 100.0]
    logit = x[:, 0] - 0.3 * (x[:, 1] - 5.0) + rng.normal(scale=0.5, size=rows)
    df = pd.DataFrame(x, columns=FEATURES)
    df["label"] = (logit > 0).astype(int)
    root.mkdir(parents=True, exist_ok=True)
    cut = rows * 3 // 4
    df.iloc[:cut].to_csv(root / "train.csv", index=False)
    df.iloc[cut:].to_parquet(root / "eval.parquet", index=False)
    return DatasetSpec(train_uri=str(root / "train.csv"), eval_uri=str(root / "eval.parquet"),
                       target_column="label", feature_columns=FEATURES)


def make_config(root: Path, data: DatasetSpec, **kw) -> TrainingConfig:
    base = {
        "dataset": data, "checkpoint_dir": str(root / "ckpt"), "output_dir": str(root / "out"),
        "epochs": 3, "batch_size": 16, "nproc_per_node": 2, "seed": 7, "learning_rate": 0.01,
        "model_kwargs": {"hidden_sizes": [16, 8], "dropout": 0.1}, "log_every_n_steps": 1,
        "checkpoint": CheckpointPolicy(every_n_steps=3, keep_last=2, keep_best=1),
        "run_name": root.name,
    }
    return TrainingConfig(**(base | kw))


def weights(uri: str) -> dict[str, torch.Tensor]:
    model, _ = load_model(uri)
    return model.state_dict()


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DatasetSpec:
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """An uninterrupted 2-process DDP run that the other tests compare against."""
    root = tmp_path_factory.mktemp("reference")
    lines: list[str] = []
    result = TorchrunLauncher().run(make_config(root, data), log_line=lines.append, timeout_s=180)
    return root, result, lines


def test_two_process_run_end_to_end(reference, data):
    root, result, lines = reference
    assert result.world_size == 2 and result.steps == 3 * 6 and result.epochs == 3
    assert result.resumed_from is None
    assert set(result.metrics) >= {"train_loss", "val_loss", "val_auc", "val_accuracy"}
    assert 0.5 < result.metrics["val_auc"] <= 1.0
    assert result.samples_per_second > 0 and result.duration_s > 0
    saved = json.loads((root / "out" / "result.json").read_text())
    assert saved["checkpoint_uri"] == result.checkpoint_uri
    assert saved["last_checkpoint_uri"].endswith("step-0000000018")
    # Committed checkpoints only, named by step, with a manifest; retention kept last 2 + best 1.
    names = sorted(n for n in os.listdir(root / "ckpt"))
    assert all(n.startswith("step-") for n in names) and 2 <= len(names) <= 3
    manifest = read_manifest(result.last_checkpoint_uri)
    assert manifest["model_spec"]["kwargs"]["in_features"] == 4
    # Step 18 is both due by the step policy and the last batch: the epoch end is still ahead of it.
    assert manifest["data_position"] == {"epoch": 2, "batch_index": 6}
    assert manifest["config"]["nproc_per_node"] == 2
    model, _ = load_model(result.checkpoint_uri)
    x = torch.tensor(pd.read_parquet(data.eval_uri)[FEATURES].to_numpy(), dtype=torch.float32)
    assert model(x).shape == (len(x), 1)
    # Log lines carry rank prefixes and progress details.
    assert any(line.startswith("[rank1] worker rank 1/2") for line in lines)
    progress = [line for line in lines if line.startswith("[rank0] epoch") and "samples/s" in line]
    assert progress and "eta" in progress[-1]


def test_failure_raises_with_exit_code_and_last_lines(tmp_path, data):
    bad = DatasetSpec(train_uri=data.train_uri, eval_uri=data.eval_uri, target_column="label",
                      feature_columns=["f0", "missing_column"])
    with pytest.raises(TrainingError) as err:
        TorchrunLauncher().run(make_config(tmp_path, bad, nproc_per_node=1), log_line=lambda _: None,
                               timeout_s=120)
    text = str(err.value)
    assert "torchrun failed" in text and "Expected: exit code 0" in text
    assert "missing_column" in text  # the worker's own error is quoted


def test_resume_after_lost_checkpoints_is_bitwise_equal(tmp_path, reference, data):
    """A retry that finds a mid-epoch checkpoint continues exactly where the first try stood."""
    ref_root, ref, _ = reference
    cfg = make_config(tmp_path, data, checkpoint=CheckpointPolicy(every_n_steps=4, keep_last=10, keep_best=0))
    TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=180)
    manager = CheckpointManager(cfg.checkpoint_dir)
    for info in manager.committed():
        if info.step > 8:
            shutil.rmtree(info.uri)
    result = TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=180)
    assert result.resumed_from == manager.uri_for(8)
    assert read_manifest(result.resumed_from)["data_position"] == {"epoch": 1, "batch_index": 2}
    assert_bitwise_equal(weights(result.last_checkpoint_uri), weights(ref.last_checkpoint_uri))
    assert result.metrics == ref.metrics
