"""The declared model a pipeline is built from: what it learns, from which columns, how it is judged.

A :class:`ModelSpec` is plain data (no Airflow, no I/O at construction): DAG files declare one, or read one
from a JSON file with :func:`load_pipeline`, and the lifecycle task group (:mod:`airflow_mlops.lifecycle`)
builds validate -> train -> evaluate -> register -> promote from it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.factories import DEFAULT_MODEL_FACTORY, check_dangerous
from airflow_mlops.tasks import DEFAULT_METRIC, Task, UserMetric, as_task, metric_mode

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
TIME_TYPES = ("auto", "date", "numeric")


@dataclass(frozen=True)
class ModelSpec:
    """
    One model, declared once.

    :param name: registered model name (also names the experiment and the Assets).
    :param task: ``binary``, ``multiclass`` or ``regression``.
    :param features: input columns, in the order the model receives them.
    :param target: label column.
    :param factory: ``module:function`` returning an ``nn.Module``; the built-in tabular MLP by default.
    :param factory_kwargs: keyword arguments of the factory (``in_features``, ``out_features`` and the feature
        scaling are filled from the data when the factory takes them).
    :param metrics: user metrics (``module:function`` or ``{"name", "function", "mode"}``) computed beside the
        task's standard ones.
    :param gate: promotion gate (:class:`~airflow_mlops.registry.gate.GatePolicy` fields); its metric defaults to
        the task's (AUC, accuracy, RMSE) and its direction to the metric's.
    :param time_column: column that orders the rows (dates or numbers); windows are cut on it.
    :param time_type: ``auto``, ``date`` or ``numeric``: how the time column and window bounds compare.
    :param key_column: column hashed to pick holdout rows (stable across reruns); default the row number.
    :param classes: labels of a multiclass model's outputs, in order; default 0..C-1.
    :param experiment: MLflow experiment of its runs; default ``name``.
    :param pythonpath: folders that hold the user's factory and metrics (put on the path where they are used).
    :param training: defaults for :class:`~airflow_mlops.operators.training.DistributedTrainingOperator`
        (``epochs``, ``batch_size``, ``learning_rate``, ``checkpoint_policy``, ...).
    """

    name: str
    task: Task
    features: list[str]
    target: str
    factory: str = DEFAULT_MODEL_FACTORY
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: list[Any] = field(default_factory=list)
    gate: dict[str, Any] = field(default_factory=dict)
    time_column: str | None = None
    time_type: str = "auto"
    key_column: str | None = None
    classes: list[Any] | None = None
    experiment: str | None = None
    pythonpath: list[str] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", as_task(self.task))
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise MlopsConfigurationError(
                explain("Model name is not usable", expected="letters, digits, '_', '.', '-' (at most 128)",
                        received=self.name)
            )
        if isinstance(self.features, str) or not self.features or not all(isinstance(c, str) for c in self.features):
            raise MlopsConfigurationError(explain("features must be a non-empty list of column names",
                                                  expected="['f1', 'f2', ...]", received=self.features))
        if len(set(self.features)) != len(self.features):
            raise MlopsConfigurationError(explain("features repeats a column", expected="unique names",
                                                  received=self.features))
        if not isinstance(self.target, str) or not self.target or self.target in self.features:
            raise MlopsConfigurationError(
                explain("target must be one column outside the features", expected="a label column name",
                        received=self.target, hint="drop it from features (label leakage).")
            )
        if self.time_type not in TIME_TYPES:
            raise MlopsConfigurationError(explain("Unknown time_type", expected=f"one of {TIME_TYPES}",
                                                  received=self.time_type))
        if ":" not in str(self.factory):
            raise MlopsConfigurationError(explain("factory is not an import path", expected="'module:function'",
                                                  received=self.factory))
        check_dangerous(str(self.factory))
        for metric in self.metrics:
            UserMetric.parse(metric)
        if self.classes is not None and self.task is not Task.MULTICLASS:
            raise MlopsConfigurationError(explain("classes are for multiclass models", expected="task 'multiclass'",
                                                  received=self.task.value))
        object.__setattr__(self, "features", list(self.features))
        object.__setattr__(self, "metrics", list(self.metrics))
        object.__setattr__(self, "pythonpath", [str(p) for p in self.pythonpath])

    # --- what the lifecycle reads -----------------------------------------------------------------------------
    @property
    def experiment_name(self) -> str:
        return self.experiment or self.name

    @property
    def gate_metric(self) -> str:
        return str(self.gate.get("metric") or DEFAULT_METRIC[self.task])

    def gate_policy(self, **overrides: Any) -> dict[str, Any]:
        """The gate as a dict for :class:`PromoteModelOperator` (metric and direction filled in)."""
        gate = {**self.gate, **{k: v for k, v in overrides.items() if v is not None}}
        gate.setdefault("metric", self.gate_metric)
        gate.setdefault("mode", metric_mode(gate["metric"], gate.get("mode")).value)
        return gate

    def model_kwargs(self) -> dict[str, Any]:
        kwargs = dict(self.factory_kwargs)
        if self.task is Task.MULTICLASS and self.classes and "out_features" not in kwargs:
            kwargs["out_features"] = len(self.classes)
        return kwargs

    def asset_uri(self, kind: str) -> str:
        """``mlops://models/<name>/<alias>``, ``mlops://drift/<name>``, ``mlops://predictions/<name>``."""
        return f"mlops://models/{self.name}/{kind}" if kind in ("staging", "production") else f"mlops://{kind}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["task"] = self.task.value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise MlopsConfigurationError(explain("Unknown model spec keys", expected=f"a subset of {sorted(known)}",
                                                  received=unknown))
        try:
            return cls(**data)
        except TypeError as exc:
            raise MlopsConfigurationError(explain("Incomplete model spec", expected="name, task, features, target",
                                                  received=sorted(data), hint=str(exc))) from exc


@dataclass(frozen=True)
class Pipeline:
    """
    A model spec with where its data lives: the source table, the data root every path must stay under, the
    expectation suite, and defaults for the Params forms.
    """

    model: ModelSpec
    source_uri: str
    data_root: str
    suite_path: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _expand(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: variables.get(m.group(1), m.group(0)), value)
    if isinstance(value, list):
        return [_expand(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, variables) for k, v in value.items()}
    return value


def project_paths(project_root: str | os.PathLike | None = None) -> dict[str, str]:
    """``MLOPS_PROJECT_ROOT`` (the folder holding dags/ and include/), ``MLOPS_DATA_DIR`` and ``MLOPS_INCLUDE_DIR``."""
    root = Path(os.environ.get("MLOPS_PROJECT_ROOT") or project_root or Path.cwd())
    data = os.environ.get("MLOPS_DATA_DIR") or str(root / "data")
    return {"MLOPS_PROJECT_ROOT": str(root), "MLOPS_DATA_DIR": data, "MLOPS_INCLUDE_DIR": str(root / "include")}


def load_pipeline(path: str | os.PathLike, project_root: str | os.PathLike | None = None) -> Pipeline:
    """
    A pipeline from a JSON file ``{"model": {...}, "source_uri": ..., "suite_path": ..., "defaults": {...}}``.

    ``${MLOPS_DATA_DIR}``, ``${MLOPS_INCLUDE_DIR}`` and ``${MLOPS_PROJECT_ROOT}`` in its strings are replaced;
    ``data_root`` defaults to the data folder. Read at DAG parse time: a small local file, no other I/O.
    """
    variables = project_paths(project_root)
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise MlopsConfigurationError(explain("Cannot read the pipeline file", expected="a JSON file",
                                              received=f"{path}: {exc}")) from exc
    data = _expand(data, variables)
    if not isinstance(data, dict) or "model" not in data or "source_uri" not in data:
        raise MlopsConfigurationError(explain("The pipeline file is incomplete", expected="keys 'model' and "
                                              "'source_uri'", received=sorted(data) if isinstance(data, dict) else data))
    return Pipeline(
        model=ModelSpec.from_dict(data["model"]),
        source_uri=str(data["source_uri"]),
        data_root=str(data.get("data_root") or variables["MLOPS_DATA_DIR"]),
        suite_path=data.get("suite_path"),
        defaults=dict(data.get("defaults") or {}),
        description=str(data.get("description") or ""),
    )
