"""Typed training configuration: data set, checkpoint policy and the run itself, validated on construction."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any

from airflow_mlops.checkpoints.policy import CheckpointPolicy, MonitorMode, enum_value, positive_int
from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.factories import DEFAULT_MODEL_FACTORY, check_dangerous
from airflow_mlops.tasks import Task, metric_mode

__all__ = [
    "DEFAULT_MODEL_FACTORY", "CheckpointPolicy", "DatasetSpec", "EarlyStopping", "LrSchedule", "MonitorMode",
    "Strategy", "Task", "TrainingConfig",
]

_FACTORY_RE = re.compile(r"^[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*:[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*$")
_ENDPOINT_RE = re.compile(r"^[\w.\-\[\]:]+:\d{1,5}$")
_TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


class Strategy(StrEnum):
    """How the model is spread over the processes."""

    DDP = "ddp"
    FSDP = "fsdp"


class LrSchedule(StrEnum):
    CONSTANT = "constant"
    COSINE = "cosine"


def _table_uri(uri: Any, name: str) -> None:
    if not isinstance(uri, str) or not uri.lower().endswith(_TABLE_SUFFIXES):
        raise MlopsConfigurationError(
            explain(
                f"{name} is not a table this runtime reads",
                expected=f"a local path or s3:// URI ending in one of {_TABLE_SUFFIXES}",
                received=uri,
            )
        )


@dataclass(kw_only=True)
class DatasetSpec:
    """
    Where the training (and optional evaluation) rows are and which columns the model sees.

    :param train_uri: CSV or Parquet file, local path or s3:// URI.
    :param target_column: the label column.
    :param feature_columns: the input columns, in the order the model receives them.
    :param eval_uri: optional held-out table with the same columns, evaluated after every epoch.
    """

    train_uri: str
    target_column: str
    feature_columns: list[str]
    eval_uri: str | None = None

    def __post_init__(self) -> None:
        _table_uri(self.train_uri, "train_uri")
        if self.eval_uri is not None:
            _table_uri(self.eval_uri, "eval_uri")
        if not isinstance(self.target_column, str) or not self.target_column:
            raise MlopsConfigurationError(
                explain("target_column is empty", expected="a column name", received=self.target_column)
            )
        if isinstance(self.feature_columns, str) or not self.feature_columns:
            raise MlopsConfigurationError(
                explain("feature_columns must be a non-empty list of column names",
                        expected="['f1', 'f2', ...]", received=self.feature_columns)
            )
        self.feature_columns = [str(c) for c in self.feature_columns]
        if len(set(self.feature_columns)) != len(self.feature_columns):
            raise MlopsConfigurationError(
                explain("feature_columns repeats a column", expected="unique names", received=self.feature_columns)
            )
        if self.target_column in self.feature_columns:
            raise MlopsConfigurationError(
                explain("The target column is also a feature", expected="target outside feature_columns",
                        received=self.target_column, hint="drop it from feature_columns (label leakage).")
            )


@dataclass(kw_only=True)
class EarlyStopping:
    """
    Stop training once the monitored metric has not improved for ``patience`` epochs, and keep the best epoch.

    With ``validation_share`` or ``validation_rows`` the newest rows of the training table (by ``time_column``,
    else in table order) are held out of training and evaluated after every epoch: a time split inside the new
    data, apart from the evaluation set (``eval_uri``) that gates the model. Their metrics are logged as
    ``stop_<metric>`` (``stop_val_loss``). Without a split, ``monitor`` is read from the evaluation set's
    metrics (``val_loss``) or the training loss (``train_loss``).

    :param monitor: the metric, e.g. ``val_loss`` or ``val_auc`` (of the split when there is one).
    :param mode: ``min`` or ``max``; by default the metric's usual direction (losses and errors: ``min``).
    :param patience: epochs without an improvement of more than ``min_delta`` before training stops.
    :param min_delta: the smallest change that counts as an improvement (in the metric's units).
    :param validation_share: share of the training rows, the newest ones, held out for early stopping.
    :param validation_rows: the same as a row count (exclusive with ``validation_share``).
    :param time_column: the column whose newest values make the split; None: the table is in time order.
    :param restore_best: the run's result (and so the registered model) is the best epoch's checkpoint, which
        retention keeps and which is written even when the checkpoint policy would not save that epoch;
        ``False``: the last epoch's weights.
    """

    monitor: str = "val_loss"
    mode: MonitorMode | None = None
    patience: int = 2
    min_delta: float = 0.0
    validation_share: float | None = None
    validation_rows: int | None = None
    time_column: str | None = None
    restore_best: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.monitor, str) or not self.monitor:
            raise MlopsConfigurationError(explain("early_stopping.monitor is empty",
                                                  expected="a metric name such as val_loss", received=self.monitor))
        self.mode = metric_mode(self.monitor, None if self.mode is None else enum_value(MonitorMode, self.mode,
                                                                                          "early_stopping.mode"))
        positive_int(self.patience, "early_stopping.patience")
        if isinstance(self.min_delta, bool) or not isinstance(self.min_delta, int | float) or not (
            math.isfinite(self.min_delta) and self.min_delta >= 0
        ):
            raise MlopsConfigurationError(explain("early_stopping.min_delta is out of range",
                                                  expected="a finite number >= 0", received=self.min_delta))
        self.min_delta = float(self.min_delta)
        if self.validation_share is not None and self.validation_rows is not None:
            raise MlopsConfigurationError(
                explain("The early-stopping split is given twice", expected="validation_share or validation_rows",
                        received={"validation_share": self.validation_share,
                                  "validation_rows": self.validation_rows})
            )
        if self.validation_share is not None:
            share = self.validation_share
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share < 1:
                raise MlopsConfigurationError(explain("early_stopping.validation_share is out of range",
                                                      expected="0 < share < 1", received=share))
            self.validation_share = float(share)
        if self.validation_rows is not None:
            positive_int(self.validation_rows, "early_stopping.validation_rows")
        if self.time_column is not None and (not isinstance(self.time_column, str) or not self.time_column):
            raise MlopsConfigurationError(explain("early_stopping.time_column is empty",
                                                  expected="a column name or None", received=self.time_column))
        self.restore_best = bool(self.restore_best)

    @property
    def splits(self) -> bool:
        """Whether the newest training rows are held out for early stopping."""
        return self.validation_share is not None or self.validation_rows is not None

    def validation_count(self, rows: int) -> int:
        """How many of ``rows`` training rows are held out (0 without a split)."""
        if self.validation_rows is not None:
            return self.validation_rows
        if self.validation_share is not None:
            return int(rows * self.validation_share)
        return 0


@dataclass(kw_only=True)
class TrainingConfig:
    """
    One distributed training run.

    :param dataset: the rows and columns to train on.
    :param checkpoint_dir: local folder or s3:// prefix of this run's checkpoints; a retry that finds
        committed checkpoints there resumes from the newest valid one.
    :param output_dir: local folder (or s3:// prefix) where rank 0 writes ``result.json``.
    :param model_factory: ``module:function`` returning an ``nn.Module``; the built-in MLP by default.
    :param model_kwargs: keyword arguments of the factory; ``in_features`` (and, for the built-in MLP,
        ``feature_mean``/``feature_std``) are filled from the data when the factory takes them and they are absent.
    :param init_checkpoint_uri: start from these weights (fine-tuning) when the run has no checkpoint yet.
    :param max_steps: stop after this many optimizer steps (all epochs when None).
    :param protected_checkpoints: checkpoint URIs retention never deletes (e.g. ones a registered model uses).
    :param early_stopping: stop when the monitored metric stops improving and keep the best epoch
        (:class:`EarlyStopping`); ``epochs`` is then the most the run trains.
    """

    dataset: DatasetSpec
    checkpoint_dir: str
    output_dir: str
    model_factory: str = DEFAULT_MODEL_FACTORY
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    task: Task = Task.BINARY
    strategy: Strategy = Strategy.DDP
    epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 1024
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: LrSchedule = LrSchedule.CONSTANT
    seed: int = 0
    max_steps: int | None = None
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None
    checkpoint: CheckpointPolicy = field(default_factory=CheckpointPolicy)
    run_name: str = "training"
    mlflow_run_id: str | None = None
    init_checkpoint_uri: str | None = None
    protected_checkpoints: list[str] = field(default_factory=list)
    log_every_n_steps: int | None = None
    log_interval_s: float = 10.0
    early_stopping: EarlyStopping | None = None

    def __post_init__(self) -> None:
        if isinstance(self.dataset, dict):
            self.dataset = DatasetSpec(**self.dataset)
        if isinstance(self.checkpoint, dict):
            self.checkpoint = CheckpointPolicy(**self.checkpoint)
        if isinstance(self.early_stopping, dict):
            _check_keys(EarlyStopping, self.early_stopping, "early_stopping")
            self.early_stopping = _build(EarlyStopping, self.early_stopping)
        if self.early_stopping is not None and not isinstance(self.early_stopping, EarlyStopping):
            raise MlopsConfigurationError(explain("early_stopping has the wrong type",
                                                  expected="EarlyStopping, dict or None",
                                                  received=type(self.early_stopping)))
        if not isinstance(self.dataset, DatasetSpec):
            raise MlopsConfigurationError(
                explain("dataset has the wrong type", expected="DatasetSpec or dict", received=type(self.dataset))
            )
        self.task = enum_value(Task, self.task, "task")
        self.strategy = enum_value(Strategy, self.strategy, "strategy")
        self.lr_schedule = enum_value(LrSchedule, self.lr_schedule, "lr_schedule")
        if not isinstance(self.model_factory, str) or not _FACTORY_RE.match(self.model_factory):
            raise MlopsConfigurationError(
                explain("model_factory is not an import path", expected="'package.module:function'",
                        received=self.model_factory,
                        hint="put the module under include/ and add that folder to pythonpath.")
            )
        check_dangerous(self.model_factory)
        if not isinstance(self.model_kwargs, dict):
            raise MlopsConfigurationError(
                explain("model_kwargs must be a mapping", expected="a dict", received=self.model_kwargs)
            )
        for name in ("epochs", "batch_size", "eval_batch_size", "nproc_per_node", "nnodes"):
            positive_int(getattr(self, name), name)
        if self.log_every_n_steps is not None:
            positive_int(self.log_every_n_steps, "log_every_n_steps")
        if isinstance(self.log_interval_s, bool) or not isinstance(self.log_interval_s, int | float) or not (
            self.log_interval_s > 0
        ):
            raise MlopsConfigurationError(explain("log_interval_s is out of range", expected="seconds > 0",
                                                  received=self.log_interval_s))
        self.log_interval_s = float(self.log_interval_s)
        if self.max_steps is not None:
            positive_int(self.max_steps, "max_steps")
        positive_int(self.seed, "seed", minimum=0)
        if isinstance(self.node_rank, bool) or not isinstance(self.node_rank, int) or not (
            0 <= self.node_rank < self.nnodes
        ):
            raise MlopsConfigurationError(
                explain("node_rank is out of range", expected=f"0 <= node_rank < nnodes ({self.nnodes})",
                        received=self.node_rank)
            )
        for name in ("learning_rate", "weight_decay"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or (
                value <= 0 if name == "learning_rate" else value < 0
            ):
                raise MlopsConfigurationError(
                    explain(f"{name} is out of range", expected="a finite number > 0" if name == "learning_rate"
                            else "a finite number >= 0", received=value)
                )
            setattr(self, name, float(value))
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise MlopsConfigurationError(
                explain("A multi-node run needs a rendezvous endpoint", expected="rdzv_endpoint='host:port'",
                        received=None, hint="every node must name the same endpoint, reachable by all of them.")
            )
        if self.rdzv_endpoint is not None and not _ENDPOINT_RE.match(self.rdzv_endpoint):
            raise MlopsConfigurationError(
                explain("rdzv_endpoint is malformed", expected="'host:port'", received=self.rdzv_endpoint)
            )
        for name in ("checkpoint_dir", "output_dir"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise MlopsConfigurationError(explain(f"{name} is empty", expected="a local path or s3:// URI",
                                                      received=value))
        if isinstance(self.protected_checkpoints, str) or not all(
            isinstance(p, str) for p in self.protected_checkpoints
        ):
            raise MlopsConfigurationError(
                explain("protected_checkpoints must be a list of URIs", expected="list[str]",
                        received=self.protected_checkpoints)
            )
        self.protected_checkpoints = list(self.protected_checkpoints)
        if not self.run_name or not isinstance(self.run_name, str):
            raise MlopsConfigurationError(explain("run_name is empty", expected="a name", received=self.run_name))
        if self.dataset.eval_uri is None and self.checkpoint.monitor.startswith("val_") and (
            self.checkpoint.keep_best > 0
        ):
            raise MlopsConfigurationError(
                explain(
                    "The checkpoint policy ranks by a validation metric but there is no evaluation set",
                    expected="dataset.eval_uri, or a training metric as monitor",
                    received={"monitor": self.checkpoint.monitor, "eval_uri": None},
                    hint="set eval_uri, or monitor='train_loss', or keep_best=0.",
                )
            )
        stop = self.early_stopping
        if stop is not None and not stop.splits and self.dataset.eval_uri is None and stop.monitor != "train_loss":
            raise MlopsConfigurationError(
                explain("Early stopping monitors a validation metric but there are no validation rows",
                        expected="early_stopping.validation_share or validation_rows, or dataset.eval_uri",
                        received={"monitor": stop.monitor, "eval_uri": None},
                        hint="hold out the newest rows (validation_share=0.2, time_column=...), or monitor "
                        "'train_loss'.")
            )
        if stop is not None and stop.time_column == self.dataset.target_column:
            raise MlopsConfigurationError(explain("early_stopping.time_column is the target",
                                                  expected="the table's time column",
                                                  received=stop.time_column))

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (Enums as their values)."""

        def plain(value: Any) -> Any:
            if isinstance(value, Enum):
                return value.value
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [plain(v) for v in value]
            return value

        return plain(asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MlopsConfigurationError(
                explain("Unknown training config keys", expected=f"a subset of {sorted(known)}", received=unknown)
            )
        data = dict(data)
        if isinstance(data.get("dataset"), dict):
            _check_keys(DatasetSpec, data["dataset"], "dataset")
            data["dataset"] = _build(DatasetSpec, data["dataset"])
        if isinstance(data.get("checkpoint"), dict):
            _check_keys(CheckpointPolicy, data["checkpoint"], "checkpoint")
            data["checkpoint"] = _build(CheckpointPolicy, data["checkpoint"])
        if isinstance(data.get("early_stopping"), dict):
            _check_keys(EarlyStopping, data["early_stopping"], "early_stopping")
            data["early_stopping"] = _build(EarlyStopping, data["early_stopping"])
        return _build(cls, data)


def _build(cls: type, data: dict[str, Any]) -> Any:
    try:
        return cls(**data)
    except TypeError as exc:  # a required field is missing
        raise MlopsConfigurationError(
            explain(f"Incomplete {cls.__name__}", expected="every required field", received=sorted(data),
                    hint=str(exc))
        ) from exc


def _check_keys(cls: type, data: dict[str, Any], name: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MlopsConfigurationError(
            explain(f"Unknown {name} keys", expected=f"a subset of {sorted(known)}", received=unknown)
        )
