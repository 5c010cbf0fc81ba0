"""What a training checkpoint holds, in forms that ``torch.load(weights_only=True)`` reads back."""

from __future__ import annotations

import os
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from airflow_mlops.checkpoints.manager import local_copy, read_manifest
from airflow_mlops.checkpoints.sharded import DCP_DIRNAME, load_model_weights
from airflow_mlops.exceptions import CheckpointError, explain
from airflow_mlops.hooks.storage import Storage, get_storage

if TYPE_CHECKING:
    import torch

MODEL_FILE = "model.pt"
TRAINER_FILE = "trainer.pt"
LAYOUT_FULL = "full"  # rank 0 wrote model.pt and trainer.pt
LAYOUT_SHARDED = "sharded"  # every rank wrote shards under dcp/, rank 0 wrote trainer.pt


def capture_rng() -> dict[str, Any]:
    """RNG states of torch, numpy and Python as tensors and plain numbers."""
    import numpy as np
    import torch

    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python_version": int(py_version),
        "python_state": torch.tensor(py_state, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_name": str(np_name),
        "numpy_keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(v) for v in state["python_state"].tolist()),
                     state["python_gauss"]))
    np.random.set_state((state["numpy_name"], state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_file(directory: str, name: str) -> Any:
    import torch

    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise CheckpointError(explain(f"Checkpoint has no {name}", expected=f"{name} in the folder",
                                      received=sorted(os.listdir(directory))))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(checkpoint_uri: str, storage: Storage | None = None, allowed: Iterable[str] | None = None,
               ) -> tuple[torch.nn.Module, dict[str, Any]]:
    """
    Rebuild the model of a committed checkpoint from its model spec and load its weights (checksums verified).

    The manifest's factory is only built when allowed (``allowed``: the caller's configured factories; see
    :func:`airflow_mlops.factories.resolve_factory`): a checkpoint never chooses the code that runs.

    Returns the module in eval mode and the checkpoint's manifest (step, epoch, metrics, model_spec, config).
    """
    from airflow_mlops.factories import build_model

    storage = storage or get_storage(checkpoint_uri)
    manifest = read_manifest(checkpoint_uri, storage)
    spec = manifest.get("model_spec")
    if not spec:
        raise CheckpointError(explain("Checkpoint has no model spec", expected="model_spec in the manifest",
                                      received=sorted(manifest)))
    if not isinstance(spec, dict) or not isinstance(spec.get("factory"), str):
        raise CheckpointError(explain("Checkpoint model spec is malformed", expected="{'factory': str, 'kwargs': {...}}",
                                      received=str(spec)[:200]))
    model = build_model(spec, allowed)
    with local_copy(checkpoint_uri, storage) as directory:
        if manifest.get("layout") == LAYOUT_SHARDED:
            load_model_weights(model, os.path.join(directory, DCP_DIRNAME))
        else:
            model.load_state_dict(load_file(directory, MODEL_FILE))
    model.eval()
    return model, manifest
