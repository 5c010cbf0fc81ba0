"""drift_monitor: window -> validation -> drift and performance against the champion -> trigger policy -> drift Asset."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import drift_monitor_dag, quarterly
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
RAINFALL = load_pipeline(PROJECT / "include" / "pipelines" / "rainfall.json", PROJECT)

# The shipped defaults of TriggerPolicy (benchmarks/evaluate_policies.py, README "Continual learning") fine-tune on
# every window, refresh when the calibrated drop test fires and retrain when it fires again after the refresh. This
# DAG trains only when a rule fires, so that each training in the demo has a reason: the drop test calibrates on
# the first window after a training and fires on a drop of 2 standard errors in one window (quarterly windows of
# ~90 days give AUC standard errors of 0.05-0.08, so that is a drop of 0.10-0.16), or of 1.25 in two; cooldown
# and budget count in windows and compute.
POLICY = {
    "rules": [{"signals": ["performance_drop"], "consecutive": 1},
              {"signals": ["data_drift", "prediction_drift"], "consecutive": 4}],
    "fine_tune_every_window": False,
    "drop_test": {"calibration_windows": 1, "allowance": 0.5, "threshold": 1.5},
    "cooldown_windows": 1,
    "budget_share": 0.08,
    "fine_tune_cost": 0.03,
    "max_consecutive_fine_tunes": 3,
}

DOC = """
### drift_monitor

Every quarter (or for the window given in the Params form): is the champion still fit for the data? A scheduled
run checks the quarter that just ended (a data-interval timetable: Airflow 3's plain cron schedules give a run no
interval), moved back by the Param `replay_offset_days`: 40 years by default, so the schedule replays the
bundled history (1949-1998); 0 for live data.

1. **prepare_reference / prepare_current**: the reference window (by default the two years before) and the window
   to check, cut out of the source table.
2. **validate**: the expectation suite on the current window; a broken batch stops here.
3. **detect_drift**: Evidently's data drift preset, per column, plus the champion's predictions on both windows
   (prediction drift). The HTML report and JSON summary go to the MLflow run (extra link "Drift report").
4. **monitor_performance**: the labels of the window have arrived (rain is known the next day): the champion's
   AUC on it, with its standard error for the window's size.
5. **trigger_policy**: the policy judges the AUC against the champion's own out-of-time windows (a CUSUM of
   standardised drops), then rules, cooldown and compute budget in windows; its state lives in the drift Asset's
   state store (the `state_uri` file outside Airflow). It decides nothing, a fine-tune or a retrain. Only a trigger emits the drift Asset
   event, with the summary, that `continual_learning` is scheduled on.
"""

dag = drift_monitor_dag(RAINFALL, policy=POLICY, dag_id="drift_monitor", doc=DOC, schedule=quarterly())
