"""A registered model as the package stores it: weights (no pickle) plus the spec that rebuilds the module.

A version's MLflow model is a ``python_function`` model from code (``pyfunc_model.py``) whose artifact
``weights/`` holds ``model.pt`` (a state dict, read with ``torch.load(weights_only=True)``) and
``model.json`` (factory, kwargs, task, features, classes). Whoever loads it, this package or
``mlflow.pyfunc.load_model``, rebuilds the module from its factory; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import ModelOutputError, RegistryError, explain
from airflow_mlops.tasks import Task, as_task, predict_scores, prediction_frame

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

PACKAGE_FORMAT = 1
WEIGHTS_ARTIFACT = "weights"
WEIGHTS_FILE = "model.pt"
META_FILE = "model.json"
PYFUNC_CODE = str(Path(__file__).with_name("pyfunc_model.py"))


@dataclass(frozen=True)
class PackagedModel:
    """What rebuilds a registered model: its spec (factory and kwargs), task, input columns and class labels."""

    model_spec: dict[str, Any]
    task: str
    features: list[str]
    classes: list[Any] | None = None
    threshold: float = 0.5
    format: int = PACKAGE_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PackagedModel:
        known = {k: data[k] for k in ("model_spec", "task", "features", "classes", "threshold", "format", "extra")
                 if k in data}
        return cls(**known)


def write_package(directory: str | os.PathLike, model: nn.Module, meta: PackagedModel) -> str:
    """Write ``model.pt`` (state dict) and ``model.json`` into ``directory``; returns the directory."""
    import torch

    os.makedirs(directory, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, META_FILE), "w") as fh:
        json.dump(meta.to_dict(), fh, sort_keys=True, default=str)
    return str(directory)


def read_package(directory: str | os.PathLike, allowed: Iterable[str] | None = None,
                 ) -> tuple[nn.Module, PackagedModel]:
    """Rebuild the module from ``model.json`` and load ``model.pt`` with ``weights_only=True``."""
    import torch

    from airflow_mlops.factories import build_model

    meta_path, weights_path = os.path.join(directory, META_FILE), os.path.join(directory, WEIGHTS_FILE)
    if not (os.path.isfile(meta_path) and os.path.isfile(weights_path)):
        raise RegistryError(
            explain("The model holds no package weights", expected=f"{WEIGHTS_FILE} and {META_FILE}",
                    received=sorted(os.listdir(directory)) if os.path.isdir(directory) else str(directory),
                    hint="the version was not registered by this package; register it again with "
                    "RegisterModelOperator.")
        )
    with open(meta_path) as fh:
        meta = PackagedModel.from_dict(json.load(fh))
    model = build_model(meta.model_spec, allowed)
    model.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    model.eval()
    return model, meta


def predict_frame(model: nn.Module, meta: PackagedModel, df: pd.DataFrame) -> pd.DataFrame:
    """The registered model's answer for the rows of ``df``: what its task returns, one row per input row."""
    missing = [c for c in meta.features if c not in df.columns]
    if missing:
        raise ModelOutputError(explain("The rows lack model input columns", expected=meta.features,
                                       received=missing))
    import numpy as np

    x = np.ascontiguousarray(df[meta.features].to_numpy(dtype="float32"))
    scores = predict_scores(model, x, meta.task)
    return prediction_frame(meta.task, scores, meta.classes if as_task(meta.task) is Task.MULTICLASS else None,
                            meta.threshold)


def log_packaged_model(model: nn.Module, meta: PackagedModel, input_example: pd.DataFrame,
                       code_paths: list[str] | None = None, pip_requirements: list[str] | None = None) -> Any:
    """Log the model to the active MLflow run as a pyfunc from code; signature from the model's real output."""
    from mlflow.models import infer_signature

    from airflow_mlops.factories import ALLOWED_FACTORIES_ENV, check_factory_allowed

    output = predict_frame(model, meta, input_example)
    signature = infer_signature(input_example, output)
    factory = str(meta.model_spec.get("factory", ""))
    check_factory_allowed(factory)
    # MLflow infers the requirements by loading the model in a child process: it inherits this allow-list
    # (the factory was allowed here, by the caller's configuration) for the time of the call only.
    before = os.environ.get(ALLOWED_FACTORIES_ENV)
    os.environ[ALLOWED_FACTORIES_ENV] = ",".join(p for p in (before, factory) if p)
    try:
        return _log_pyfunc(meta, model, input_example, signature, code_paths, pip_requirements)
    finally:
        if before is None:
            os.environ.pop(ALLOWED_FACTORIES_ENV, None)
        else:
            os.environ[ALLOWED_FACTORIES_ENV] = before


def _log_pyfunc(meta: PackagedModel, model: nn.Module, input_example: pd.DataFrame, signature: Any,
                code_paths: list[str] | None, pip_requirements: list[str] | None) -> Any:
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="mlops-package-") as tmp:
        folder = write_package(os.path.join(tmp, WEIGHTS_ARTIFACT), model, meta)
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=PYFUNC_CODE,
            artifacts={WEIGHTS_ARTIFACT: folder},
            signature=signature,
            input_example=input_example,
            code_paths=code_paths or None,
            pip_requirements=pip_requirements,
        )


def load_registered(client: Any, name: str, version: str, allowed: Iterable[str] | None = None,
                    ) -> tuple[nn.Module, PackagedModel]:
    """A registered version's module, rebuilt from its weights artifact (never unpickled; factory allowed only)."""
    import tempfile

    import mlflow

    with tempfile.TemporaryDirectory(prefix="mlops-model-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}/artifacts/{WEIGHTS_ARTIFACT}",
                dst_path=tmp, tracking_uri=getattr(client, "tracking_uri", None))
        except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for a missing artifact
            raise RegistryError(
                explain(f"Cannot read the weights of {name} v{version}", expected=f"artifact "
                        f"'artifacts/{WEIGHTS_ARTIFACT}' in the model", received=str(exc)[:300],
                        hint="the version was not registered by this package; register it again.")
            ) from exc
        return read_package(local, allowed)


def dataset_input(uri: str, digest: str | None, name: str, schema: dict[str, str] | None = None) -> Any:
    """
    An MLflow dataset for a table the package already read and digested: its location, the package's digest
    and schema, no second read of the rows (MLflow's UI lists it under the run's "Datasets").
    """
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import ColSpec, Schema

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "can be interpreted in multiple ways": any local source is the same
        source = resolve_dataset_source(uri)
    cols = None
    if schema:
        kinds = {"int64": "long", "int32": "integer", "float64": "double", "float32": "float", "bool": "boolean"}
        cols = Schema([ColSpec(kinds.get(str(t), "string"), str(c)) for c, t in schema.items()])
    short = (digest or "").split(":")[-1][:8] or None
    return MetaDataset(source=source, name=name, digest=short, schema=cols)


def lineage_summary(lineage: dict[str, Any], task: str) -> str:
    """The version's description in MLflow's UI: what it learnt from, with which code and settings, and where."""
    data, code = lineage.get("data") or {}, lineage.get("code") or {}
    framework, orchestration = lineage.get("framework") or {}, lineage.get("orchestration") or {}
    parent = (lineage.get("parent") or {}).get("version")
    lines = [
        f"{task} model; data {data.get('uri')} ({data.get('rows')} rows, {data.get('digest')})",
        f"code {code.get('git_commit')}{' (dirty)' if code.get('git_dirty') else ''} in {code.get('repository')}; "
        f"package {code.get('package_version')}",
        f"hyperparameters {json.dumps(lineage.get('hyperparameters') or {}, sort_keys=True)}",
        f"framework torch {framework.get('torch')}, python {framework.get('python')}, "
        f"{framework.get('model_factory') or framework.get('model_class')}",
        f"image {(lineage.get('training_image') or {}).get('reference')}",
        f"Airflow {orchestration.get('dag_id')} / {orchestration.get('run_id')} (try {orchestration.get('try_number')})",
        f"checkpoint {(lineage.get('checkpoint') or {}).get('uri')}",
    ]
    if parent:
        lines.append(f"fine-tuned from version {parent}")
    return "\n".join(lines)
