"""batch_inference: score a window of new data with models:/rainfall@production, recording the version used."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import batch_inference_dag
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
RAINFALL = load_pipeline(PROJECT / "include" / "pipelines" / "rainfall.json", PROJECT)

DOC = """
### batch_inference

Scores a window of the data with the model that holds the `production` alias and writes predictions with the
model version that made them (`model_version` column). Runs whenever `production` moves (Asset schedule:
promotion or rollback) and on demand with a Params form.
"""

dag = batch_inference_dag(RAINFALL, dag_id="batch_inference", doc=DOC, passthrough=["day", "date"])
