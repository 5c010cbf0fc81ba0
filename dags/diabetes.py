"""diabetes: a regression model (disease progression) through training, promotion and batch inference.

The spec (include/pipelines/diabetes.json) names the task, columns and gate (RMSE, lower is better); windows
are numeric batches 1..11.
"""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import batch_inference_dag, training_dag
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
DIABETES = load_pipeline(PROJECT / "include" / "pipelines" / "diabetes.json", PROJECT)

train = training_dag(DIABETES, dag_id="diabetes_train_pipeline", doc="Train, evaluate and promote the diabetes "
                     "progression model.")
score = batch_inference_dag(DIABETES, dag_id="diabetes_batch_inference", doc="Score patients with the production "
                            "model.")
