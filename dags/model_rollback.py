"""model_rollback: put an alias of the rainfall model back on its previous version in one step."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import rollback_dag
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
RAINFALL = load_pipeline(PROJECT / "include" / "pipelines" / "rainfall.json", PROJECT)

DOC = """
### model_rollback

Restores the previous version of an alias (default `production`, and `champion` with it) from the recorded
alias history, or a version given in the form. The move is recorded with its reason and emits the alias's
Asset event, so `batch_inference` and deployments pick the restored version up.
"""

dag = rollback_dag(RAINFALL, dag_id="model_rollback", doc=DOC)
