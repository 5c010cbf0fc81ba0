"""A checkpoint manifest never chooses code to run nor a place to write: factories and file names refused."""

from __future__ import annotations

import json
import os

import pytest
import torch

from airflow_mlops.checkpoints import CheckpointManager, load_model, read_manifest
from airflow_mlops.checkpoints.manager import local_copy, verify_files
from airflow_mlops.checkpoints.manifest import MANIFEST_NAME, dumps
from airflow_mlops.checkpoints.state import MODEL_FILE
from airflow_mlops.exceptions import CheckpointCorruptError, MlopsConfigurationError
from airflow_mlops.factories import ALLOWED_FACTORIES_ENV, build_model, resolve_factory
from airflow_mlops.training.config import DatasetSpec, TrainingConfig
from airflow_mlops.training.models import tabular_mlp


def commit_with_spec(root, spec, step=1):
    """A checkpoint whose manifest (and every digest in it) is consistent, as a store writer could make."""
    manager = CheckpointManager(str(root))
    staged = manager.stage(step)
    staged.save_torch(MODEL_FILE, tabular_mlp(3, hidden_sizes=[4]).state_dict())
    return manager.commit(staged, epoch=0, metrics={"val_loss": 1.0}, meta={"layout": "full", "model_spec": spec})


@pytest.mark.parametrize("factory", ["subprocess:run", "os:system", "builtins:exec", "shutil:rmtree"])
def test_manifest_factory_that_runs_commands_is_refused(tmp_path, factory):
    marker = tmp_path / "pwned"
    kwargs = {"args": ["touch", str(marker)]} if factory == "subprocess:run" else {"command": f"touch {marker}"}
    info = commit_with_spec(tmp_path / "ckpt", {"factory": factory, "kwargs": kwargs})
    with pytest.raises(MlopsConfigurationError, match="never a model factory") as err:
        load_model(info.uri)
    assert "Expected:" in str(err.value) and "Hint:" in str(err.value)
    assert not marker.exists()


def test_manifest_factory_not_configured_is_refused_until_allowed(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_models.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('x')\n"
        "from airflow_mlops.training.models import tabular_mlp\n\n"
        "def net(**kw):\n    return tabular_mlp(3, hidden_sizes=[4])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    info = commit_with_spec(tmp_path / "ckpt", {"factory": "evil_models:net", "kwargs": {}})
    with pytest.raises(MlopsConfigurationError, match="not allowed") as err:
        load_model(info.uri)
    assert ALLOWED_FACTORIES_ENV in str(err.value)
    assert not marker.exists()  # the module was not even imported
    # The caller's configured factory, or the deployment's allow-list, lets it load.
    model, _ = load_model(info.uri, allowed=["evil_models:net"])
    assert model(torch.zeros(2, 3)).shape == (2, 1)
    marker.unlink()
    monkeypatch.setenv(ALLOWED_FACTORIES_ENV, "other:thing, evil_models:*")
    assert load_model(info.uri)[0] is not None


def test_built_in_factories_need_no_allow_list(tmp_path):
    spec = {"factory": "airflow_mlops.training.models:tabular_mlp", "kwargs": {"in_features": 3, "hidden_sizes": [4]}}
    info = commit_with_spec(tmp_path / "ckpt", spec)
    assert load_model(info.uri)[0](torch.zeros(1, 3)).shape == (1, 1)
    assert build_model(spec)(torch.zeros(1, 3)).shape == (1, 1)


@pytest.mark.parametrize("factory", ["os:system", "subprocess:Popen", "importlib:import_module", "pickle:loads",
                                     "sys.modules:get", "models.net:_private"])
def test_dangerous_factories_refused_even_when_configured(factory):
    with pytest.raises(MlopsConfigurationError, match="never a model factory"):
        TrainingConfig(dataset=DatasetSpec(train_uri="/d/t.csv", target_column="y", feature_columns=["a"]),
                       checkpoint_dir="/tmp/c", output_dir="/tmp/o", model_factory=factory)
    with pytest.raises(MlopsConfigurationError, match="never a model factory"):
        resolve_factory(factory, allowed=[factory])


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/../../x", "a\\..\\x", "a//b", "./model.pt", ""])
def test_manifest_file_names_outside_the_folder_are_refused(tmp_path, name):
    info = commit_with_spec(tmp_path / "ckpt", {"factory": "airflow_mlops.training.models:tabular_mlp",
                                                "kwargs": {"in_features": 3, "hidden_sizes": [4]}})
    manifest = json.loads((tmp_path / "ckpt" / os.path.basename(info.uri) / MANIFEST_NAME).read_bytes())
    manifest["files"][name] = manifest["files"][MODEL_FILE]
    (tmp_path / "ckpt" / os.path.basename(info.uri) / MANIFEST_NAME).write_bytes(dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match="outside its checkpoint folder"):
        read_manifest(info.uri)
    with pytest.raises(CheckpointCorruptError, match="outside its checkpoint folder"):
        verify_files(info.uri, manifest)
    with pytest.raises(CheckpointCorruptError, match="outside its checkpoint folder"), local_copy(info.uri):
        pass
