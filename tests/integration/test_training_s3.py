"""Checkpoints on S3 (moto server over HTTP): commit with the manifest last, verify, resume, load."""

from __future__ import annotations

import pytest
import torch

from airflow_mlops.checkpoints import CheckpointManager, load_model, read_manifest
from airflow_mlops.checkpoints.manifest import MANIFEST_NAME
from airflow_mlops.training.config import CheckpointPolicy
from airflow_mlops.training.launcher import TorchrunLauncher
from integration.s3_fixtures import TrainingBucket, training_bucket  # noqa: F401
from integration.test_training_launcher import make_config, make_dataset

pytestmark = pytest.mark.integration


def test_s3_checkpoints_commit_resume_and_load(tmp_path, training_bucket: TrainingBucket):  # noqa: F811
    data = make_dataset(tmp_path / "data")
    cfg = make_config(tmp_path, data, checkpoint_dir=training_bucket.uri("runs/r1"), epochs=2,
                      checkpoint=CheckpointPolicy(every_n_steps=4, keep_last=2, keep_best=1))
    first = TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=240, extra_env=training_bucket.env)
    assert first.last_checkpoint_uri == training_bucket.uri("runs/r1/step-0000000012")
    manager = CheckpointManager(cfg.checkpoint_dir)
    steps = [i.step for i in manager.committed()]
    assert steps[-2:] == [8, 12] and len(steps) <= 3
    for step in steps:
        keys = training_bucket.keys(f"runs/r1/step-{step:010d}/")
        assert f"runs/r1/step-{step:010d}/{MANIFEST_NAME}" in keys
        manager.verify(manager.uri_for(step))
    final_model, manifest = load_model(first.last_checkpoint_uri)
    assert manifest["step"] == 12

    # What an interrupted upload leaves behind (files, no manifest) is not a checkpoint.
    training_bucket.client.put_object(Bucket=training_bucket.name, Key="runs/r1/step-0000000099/model.pt",
                                      Body=b"partial")
    assert [i.step for i in manager.committed()] == steps
    # A flipped byte in the newest checkpoint: the previous one is used.
    key = "runs/r1/step-0000000012/model.pt"
    body = bytearray(training_bucket.client.get_object(Bucket=training_bucket.name, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    training_bucket.client.put_object(Bucket=training_bucket.name, Key=key, Body=bytes(body))
    assert manager.latest().step == 8

    lines: list[str] = []
    again = TorchrunLauncher().run(cfg, log_line=lines.append, timeout_s=240, extra_env=training_bucket.env)
    assert again.resumed_from == manager.uri_for(8)
    assert any("is corrupt and is skipped" in line for line in lines)
    assert not training_bucket.keys("runs/r1/step-0000000099/")  # leftovers cleaned up
    resumed_model, _ = load_model(again.last_checkpoint_uri)
    for key_, value in final_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[key_], value), key_
    assert read_manifest(again.last_checkpoint_uri)["files"]["model.pt"]["size"] > 0
