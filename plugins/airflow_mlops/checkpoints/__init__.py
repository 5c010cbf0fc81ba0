"""Checkpoints: format, manifest, atomic commit, retention policy and resume lookup (no Airflow imports)."""

from __future__ import annotations

from airflow_mlops.checkpoints.manager import (
    CheckpointInfo,
    CheckpointManager,
    StagedCheckpoint,
    local_copy,
    read_manifest,
    verify_files,
)
from airflow_mlops.checkpoints.policy import CheckpointPolicy, MonitorMode
from airflow_mlops.checkpoints.retention import CheckpointRecord, RetentionPlan, is_due, plan_retention
from airflow_mlops.checkpoints.state import load_model

__all__ = [
    "CheckpointInfo",
    "CheckpointManager",
    "CheckpointPolicy",
    "CheckpointRecord",
    "MonitorMode",
    "RetentionPlan",
    "StagedCheckpoint",
    "is_due",
    "load_model",
    "local_copy",
    "plan_retention",
    "read_manifest",
    "verify_files",
]
