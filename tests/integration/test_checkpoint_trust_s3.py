"""A manifest on S3 that lists ``..`` file names is refused before anything is downloaded."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from airflow_mlops.checkpoints import CheckpointManager, load_model
from airflow_mlops.checkpoints.manifest import MANIFEST_NAME, dumps
from airflow_mlops.checkpoints.state import MODEL_FILE
from airflow_mlops.exceptions import CheckpointCorruptError
from airflow_mlops.training.models import tabular_mlp

pytestmark = pytest.mark.integration

SPEC = {"factory": "airflow_mlops.training.models:tabular_mlp", "kwargs": {"in_features": 3, "hidden_sizes": [4]}}


@pytest.mark.parametrize("name", ["../../escape.bin", "../../../../escape.bin", "dcp/../../escape.bin"])
def test_s3_manifest_with_traversal_writes_nothing(s3_env, tmp_path, monkeypatch, name):
    bucket = s3_env.create_bucket(f"trust-{os.getpid()}-{os.urandom(3).hex()}")
    root = f"s3://{bucket}/runs/r1"
    manager = CheckpointManager(root)
    staged = manager.stage(1)
    staged.save_torch(MODEL_FILE, tabular_mlp(3, hidden_sizes=[4]).state_dict())
    info = manager.commit(staged, epoch=0, metrics={"val_loss": 1.0}, meta={"layout": "full", "model_spec": SPEC})
    assert load_model(info.uri)[0] is not None  # the honest checkpoint loads

    client = s3_env.client()
    key = f"runs/r1/step-{1:010d}/{MANIFEST_NAME}"
    manifest = json.loads(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    payload = b"attacker bytes"
    manifest["files"][name] = manifest["files"][MODEL_FILE]
    # The object the traversal name points at exists, so a download would succeed if attempted.
    client.put_object(Bucket=bucket, Key=os.path.normpath(f"runs/r1/step-{1:010d}/{name}").lstrip("/"),
                      Body=payload)
    client.put_object(Bucket=bucket, Key=key, Body=dumps(manifest))

    sandbox = tmp_path / "tmp" / "a" / "b"
    sandbox.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(sandbox))
    with pytest.raises(CheckpointCorruptError, match="outside its checkpoint folder") as err:
        load_model(info.uri)
    assert name in str(err.value) and "Hint:" in str(err.value)
    written = [os.path.join(d, f) for d, _, files in os.walk(tmp_path) for f in files]
    assert written == []  # nothing downloaded, inside the temporary folder or beside it
