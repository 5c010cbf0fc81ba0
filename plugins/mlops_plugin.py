"""Registers the airflow-mlops plugin from the plugins folder (the same class as the package entry point)."""

from __future__ import annotations

from airflow_mlops.plugin import MlopsPlugin

__all__ = ["MlopsPlugin"]
