"""digits: a multiclass model of the user's own (a small CNN) through the whole lifecycle, from one declared spec.

The spec (include/pipelines/digits.json) names the task, columns, factory (include/models/digits_cnn.py), a
user metric and the gate; each DAG below is one call. Windows are numeric batches 1..18.
"""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import (
          batch_inference_dag,
          continual_learning_dag,
          drift_monitor_dag,
          training_dag,
)
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
DIGITS = load_pipeline(PROJECT / "include" / "pipelines" / "digits.json", PROJECT)
# A fixed macro-F1 drop (max_drop in include/pipelines/digits.json) fires the signal from the first window; a
# cooldown of one window, at most 3 trainings in 10 windows; trainings only when the signal fires.
POLICY = {"rules": [{"signals": ["performance_drop"], "consecutive": 1}], "fine_tune_every_window": False,
          "cooldown_windows": 1, "budget": 3, "budget_period_windows": 10, "budget_share": None}

train = training_dag(DIGITS, dag_id="digits_train_pipeline", doc="Train, evaluate and promote the digits CNN.")
score = batch_inference_dag(DIGITS, dag_id="digits_batch_inference", doc="Score digits with the production CNN.")
monitor = drift_monitor_dag(DIGITS, policy=POLICY, dag_id="digits_drift_monitor", reference_span=4,
                            doc="Drift and accuracy of the digits champion on a window of batches.")
learn = continual_learning_dag(DIGITS, dag_id="digits_continual_learning",
                               doc="Fine-tune the digits champion when the drift policy triggers.")
