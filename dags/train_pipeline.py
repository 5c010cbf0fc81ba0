"""train_pipeline: data window -> validation -> torchrun training -> evaluation -> registration -> promotion."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import training_dag
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
RAINFALL = load_pipeline(PROJECT / "include" / "pipelines" / "rainfall.json", PROJECT)

DOC = """
### train_pipeline

Trains the rain-tomorrow model on a window of the bundled daily weather data and promotes it when it beats
the champion.

1. **start_mlflow_run**: one MLflow run for the whole DAG run (a retry finds the same run).
2. **prepare_window**: cuts `[window_start, window_end]` out of the source table; a deterministic 20 % of the
   days are held out for evaluation.
3. **validate**: the Great Expectations suite `include/expectations/rainfall.json`; a failing batch is
   quarantined and nothing downstream runs.
4. **train**: torchrun, `processes` workers (gloo on CPU, nccl on GPU), checkpoints every epoch; a retry
   resumes from the last committed checkpoint.
5. **evaluate**: the new model and the current champion on the same held-out rows.
6. **register**: a model version with its lineage (data digest, commit, hyperparameters, framework, image,
   packages, DAG run); a retry never registers twice.
7. **promote_staging**: the gate (absolute AUC floor, not worse than the champion it was evaluated against)
   moves `staging`; a rejected model moves nothing and the rest is skipped.
8. **approve_production** (only with the Param `require_approval`): a person approves or rejects in the UI.
9. **promote_production**: moves `production` and `champion`, emits an Asset event that deployments and
   `batch_inference` are scheduled on.
"""

dag = training_dag(RAINFALL, dag_id="train_pipeline", doc=DOC)
