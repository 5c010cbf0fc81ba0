"""The lineage record of a model version, how it is collected, and its completeness check."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

from airflow_mlops.exceptions import LineageIncompleteError

TAG_PREFIX = "lineage."

#: Fields every registered version must carry (dotted names of the flattened record).
REQUIRED_FIELDS: tuple[str, ...] = (
    "data.uri",
    "data.digest",
    "data.rows",
    "data.schema",
    "data.validation",
    "code.git_commit",
    "code.git_dirty",
    "code.package_version",
    "hyperparameters",
    "framework.model_class",
    "framework.torch",
    "framework.python",
    "framework.cuda",
    "training_image.reference",
    "training_image.digest",
    "packages.artifact",
    "packages.digest",
    "orchestration.dag_id",
    "orchestration.run_id",
    "orchestration.task_id",
    "orchestration.try_number",
    "checkpoint.uri",
)


@dataclass
class LineageRecord:
    """Everything needed to trace a model version to its data, code, settings, framework, image and run."""

    data: dict[str, Any] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    framework: dict[str, Any] = field(default_factory=dict)
    training_image: dict[str, Any] = field(default_factory=dict)
    packages: dict[str, Any] = field(default_factory=dict)
    orchestration: dict[str, Any] = field(default_factory=dict)
    checkpoint: dict[str, Any] = field(default_factory=dict)
    parent: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LineageRecord:
        return cls(**{k: dict(v or {}) for k, v in d.items() if k in cls.__dataclass_fields__})

    def flat(self) -> dict[str, Any]:
        """Dotted keys; a dict-valued group whose whole value matters (hyperparameters) stays one key."""
        out: dict[str, Any] = {}
        for group, values in self.to_dict().items():
            if group == "hyperparameters":
                out["hyperparameters"] = values
                continue
            for key, value in values.items():
                out[f"{group}.{key}"] = value
        return out

    def to_tags(self) -> dict[str, str]:
        """MLflow tags (strings; structured values as compact JSON)."""
        tags = {}
        for key, value in self.flat().items():
            if isinstance(value, (dict, list)):
                text = json.dumps(value, sort_keys=True, separators=(",", ":"))
            elif isinstance(value, bool):
                text = "true" if value else "false"
            else:
                text = str(value)
            tags[TAG_PREFIX + key] = text[:5000]
        return tags


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, dict, list, tuple)) and len(value) == 0)


def missing_fields(record: LineageRecord, required: tuple[str, ...] = REQUIRED_FIELDS) -> list[str]:
    """Names of the required fields that are absent or empty. ``False`` and ``0`` count as present."""
    flat = record.flat()
    return [name for name in required if _empty(flat.get(name))]


def check_complete(record: LineageRecord, required: tuple[str, ...] = REQUIRED_FIELDS) -> None:
    missing = missing_fields(record, required)
    if missing:
        raise LineageIncompleteError(missing)


# --- collectors: read the environment once per registration -------------------------------------------------


def git_info(path: str | None = None) -> dict[str, Any]:
    """
    Commit and dirty flag of the repository that holds ``path`` (the DAG file that defined the model: the
    user's code, not this package), from MLOPS_GIT_COMMIT in an image. Untracked files count as dirty: a
    model factory that was never committed is code nobody can check out again.
    """
    if os.environ.get("MLOPS_GIT_COMMIT"):
        return {
            "git_commit": os.environ["MLOPS_GIT_COMMIT"],
            "git_dirty": os.environ.get("MLOPS_GIT_DIRTY", "false").lower() == "true",
            "source": "environment",
        }
    cwd = path or os.path.dirname(os.path.abspath(__file__))
    if os.path.isfile(cwd):
        cwd = os.path.dirname(os.path.abspath(cwd))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=normal"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=10,
        ).stdout.strip()
        root = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        return {"git_commit": commit, "git_dirty": bool(status), "source": "git", "repository": root,
                "changed_files": len(status.splitlines())}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None, "source": "unavailable"}


def installed_packages() -> list[str]:
    """``name==version`` of every installed distribution, sorted."""
    seen = {}
    for dist in metadata.distributions():
        name = dist.metadata.get("Name")
        if name and name.lower() not in seen:
            seen[name.lower()] = f"{name}=={dist.version}"
    return sorted(seen.values(), key=str.lower)


def packages_digest(packages: list[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(packages).encode()).hexdigest()


def framework_info(model_class: str) -> dict[str, Any]:
    import torch

    cuda = torch.version.cuda or "none (cpu build)"
    return {
        "model_class": model_class,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": cuda,
        "cuda_available": bool(torch.cuda.is_available()),
    }


def training_image_info(pkg_digest: str) -> dict[str, Any]:
    """The image the training ran in, from MLOPS_TRAINING_IMAGE / MLOPS_TRAINING_IMAGE_DIGEST.

    Outside an image (the embedded default) the reference names the host's virtual environment and the digest
    is that of its package list, so two versions trained in the same environment share it.
    """
    ref = os.environ.get("MLOPS_TRAINING_IMAGE")
    if ref:
        return {"reference": ref, "digest": os.environ.get("MLOPS_TRAINING_IMAGE_DIGEST", ""), "source": "environment"}
    import sys

    return {"reference": f"local-venv:{platform.node()}:{sys.prefix}", "digest": pkg_digest, "source": "host"}


def package_version() -> str:
    from airflow_mlops import __version__

    return __version__
