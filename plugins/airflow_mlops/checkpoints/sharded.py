"""Sharded (FSDP) checkpoints through torch.distributed.checkpoint, read without unpickling arbitrary objects."""

from __future__ import annotations

import io
import pickle
import warnings
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import CheckpointCorruptError, explain

if TYPE_CHECKING:
    import torch

#: Sub-folder of a checkpoint that holds the torch.distributed.checkpoint files.
DCP_DIRNAME = "dcp"

_METADATA_CLASSES = {
    "torch.distributed.checkpoint.metadata": {
        "Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING",
    },
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "pathlib": {"PosixPath", "PurePosixPath"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    """DCP writes its index with pickle; only the index's own plain classes may be rebuilt from it."""

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if name in _METADATA_CLASSES.get(module, ()):
            return super().find_class(module, name)
        if module == "torch":
            obj = getattr(torch, name, None)
            if obj is torch.Size or isinstance(obj, torch.dtype | torch.memory_format | torch.layout):
                return obj
        raise CheckpointCorruptError(
            explain("Sharded checkpoint index refers to an unexpected object",
                    expected="torch.distributed.checkpoint metadata classes", received=f"{module}.{name}",
                    hint="the checkpoint was not written by this runtime or was tampered with.")
        )


def _reader(directory: str) -> Any:
    from torch.distributed.checkpoint import FileSystemReader

    class SafeFileSystemReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            from torch.distributed.checkpoint.metadata import StorageMeta

            path = self._get_metadata_path(kwargs.get("rank"))
            with self.fs.create_stream(path, "rb") as fh:
                metadata = _MetadataUnpickler(io.BytesIO(fh.read())).load()
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeFileSystemReader(directory)


def _planner() -> Any:
    import torch
    from torch.distributed.checkpoint import DefaultLoadPlanner

    class WeightsOnlyLoadPlanner(DefaultLoadPlanner):
        """Non-tensor entries (optimizer hyper-parameters) are read with ``weights_only=True``."""

        def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                from torch.distributed.checkpoint._traverse import set_element

                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return WeightsOnlyLoadPlanner()


def save_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: str) -> None:
    """Every rank writes its shards of model and optimizer state into ``directory`` (collective)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=directory)


def load_sharded(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, directory: str) -> None:
    """Load shards into the current layout (collective); works with another world size than at save time."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_model_state_dict, set_state_dict

    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        state = {"model": get_model_state_dict(model)}
        dcp.load(state, storage_reader=_reader(directory), planner=_planner())
        set_model_state_dict(model, state["model"])
        return
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, storage_reader=_reader(directory), planner=_planner())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def load_model_weights(model: torch.nn.Module, directory: str) -> None:
    """Load the model part of a sharded checkpoint into a plain module in this one process."""
    import torch.distributed.checkpoint as dcp

    state = {"model": model.state_dict()}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*single process.*")
        dcp.load(state, storage_reader=_reader(directory), planner=_planner(), no_dist=True)
    model.load_state_dict(state["model"])
