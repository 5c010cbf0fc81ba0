"""The checkpoint policy: how often checkpoints are written and which are kept (plain types, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.tasks import MonitorMode

__all__ = ["CheckpointPolicy", "MonitorMode", "enum_value", "positive_int"]


def enum_value(cls: type[Enum], value: Any, name: str) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(str(value).lower())
    except ValueError:
        raise MlopsConfigurationError(
            explain(f"Unknown {name}", expected=f"one of {[m.value for m in cls]}", received=value)
        ) from None


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MlopsConfigurationError(
            explain(f"{name} is out of range", expected=f"an integer >= {minimum}", received=value)
        )
    return value


@dataclass(kw_only=True)
class CheckpointPolicy:
    """
    How often checkpoints are written and which ones are kept.

    :param every_n_steps: save after every N optimizer steps (exclusive with ``every_n_epochs``).
    :param every_n_epochs: save after every N epochs; the default when neither is given is 1.
    :param keep_last: how many of the newest checkpoints are kept (at least 2, so a corrupt newest one
        still leaves one to resume from).
    :param keep_best: how many of the best checkpoints by ``monitor`` are kept in addition.
    :param monitor: the metric that ranks checkpoints, e.g. ``val_loss`` or ``val_auc``.
    :param mode: ``min`` when smaller is better, ``max`` otherwise.
    :param async_save: write checkpoints in a background thread while training goes on.
    :param fsync_before_commit: on local disk, flush every file to the device before the checkpoint is
        published. By default a checkpoint is published as soon as its files and manifest are written, which
        already survives a killed process, and is flushed to the device right after on a background thread;
        until that flush is done retention keeps the previous checkpoint, so a power loss can cost the newest
        checkpoint only, and its checksums then reject it on resume.
    """

    every_n_steps: int | None = None
    every_n_epochs: int | None = None
    keep_last: int = 2
    keep_best: int = 1
    monitor: str = "val_loss"
    mode: MonitorMode = MonitorMode.MIN
    async_save: bool = False
    fsync_before_commit: bool = False

    def __post_init__(self) -> None:
        if self.every_n_steps is not None and self.every_n_epochs is not None:
            raise MlopsConfigurationError(
                explain("Checkpoint frequency is given twice", expected="every_n_steps or every_n_epochs",
                        received={"every_n_steps": self.every_n_steps, "every_n_epochs": self.every_n_epochs})
            )
        if self.every_n_steps is None and self.every_n_epochs is None:
            self.every_n_epochs = 1
        if self.every_n_steps is not None:
            positive_int(self.every_n_steps, "every_n_steps")
        if self.every_n_epochs is not None:
            positive_int(self.every_n_epochs, "every_n_epochs")
        if isinstance(self.keep_last, bool) or not isinstance(self.keep_last, int) or self.keep_last < 2:
            raise MlopsConfigurationError(
                explain("keep_last is too small", expected="an integer >= 2", received=self.keep_last,
                        hint="with a single kept checkpoint a corrupt write leaves nothing to resume from.")
            )
        positive_int(self.keep_best, "keep_best", minimum=0)
        if not isinstance(self.monitor, str) or not self.monitor:
            raise MlopsConfigurationError(explain("monitor is empty", expected="a metric name such as val_loss",
                                                  received=self.monitor))
        self.mode = enum_value(MonitorMode, self.mode, "checkpoint mode")
        self.async_save = bool(self.async_save)
        self.fsync_before_commit = bool(self.fsync_before_commit)
