"""Distributed training: typed config, torchrun launcher, and the worker runtime (which imports no Airflow)."""

from __future__ import annotations

from airflow_mlops.training.config import (
    CheckpointPolicy,
    DatasetSpec,
    EarlyStopping,
    LrSchedule,
    MonitorMode,
    Strategy,
    Task,
    TrainingConfig,
)

__all__ = [
    "CheckpointPolicy",
    "DatasetSpec",
    "EarlyStopping",
    "LrSchedule",
    "MonitorMode",
    "Strategy",
    "Task",
    "TrainingConfig",
]
