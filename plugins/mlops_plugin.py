"""Registers the airflow-mlops plugin from the plugins folder when the package's entry point does not.

With ``pip install`` the entry point ``airflow.plugins`` registers the plugin; a second registration from this
file would be reported by Airflow as a plugin import error. Copied into a deployment's plugins folder without
installing the package, this file registers it (the plugins folder is on ``sys.path``, so ``airflow_mlops``
imports from there).
"""

from __future__ import annotations

from importlib.metadata import entry_points

if not any(ep.name == "airflow_mlops" for ep in entry_points(group="airflow.plugins")):
    from airflow_mlops.plugin import MlopsPlugin

    __all__ = ["MlopsPlugin"]
