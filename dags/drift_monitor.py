"""drift_monitor: window -> validation -> drift and performance against the champion -> trigger policy -> drift Asset."""

from __future__ import annotations

from pathlib import Path

from airflow_mlops.lifecycle import drift_monitor_dag, quarterly
from airflow_mlops.spec import load_pipeline

PROJECT = Path(__file__).resolve().parents[1]
RAINFALL = load_pipeline(PROJECT / "include" / "pipelines" / "rainfall.json", PROJECT)

# Settings measured on the development windows 1954-1969 (benchmarks/evaluate_policies.py, README): quarterly
# AUC of a frozen model moves by about 0.05, so a 0.10 drop is a signal; seasonal features drift in most windows.
POLICY = {
    "rules": [{"signals": ["performance_drop"], "consecutive": 1},
              {"signals": ["data_drift", "prediction_drift"], "consecutive": 4}],
    "cooldown_days": 100,
    "budget": 4,
    "budget_period_days": 365,
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
   AUC on it against its own evaluation AUC.
5. **trigger_policy**: the damping policy (rules, consecutive windows, cooldown, budget; state in
   `drift/policy_state.json`) decides nothing, a fine-tune or a retrain. Only a trigger emits the drift Asset
   event, with the summary, that `continual_learning` is scheduled on.
"""

dag = drift_monitor_dag(RAINFALL, policy=POLICY, dag_id="drift_monitor", doc=DOC, schedule=quarterly())
