"""drift_monitor: window -> validation -> drift and performance against the champion -> trigger policy -> drift Asset."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, chain

from airflow_mlops.operators.data import PrepareWindowOperator
from airflow_mlops.operators.drift import (
    DriftDetectionOperator,
    PerformanceMonitorOperator,
    TriggerPolicyOperator,
)
from airflow_mlops.operators.tracking import StartMlflowRunOperator
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.reference.rainfall import (
    DATA_DIR,
    DRIFT_ASSET,
    FEATURES,
    MODEL_NAME,
    SOURCE_URI,
    SUITE_PATH,
    TARGET,
)

STATE_URI = f"{DATA_DIR}/drift/policy_state.json"
MONITORING_EXPERIMENT = "rainfall-monitoring"
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
WINDOW_START = "{{ params.window_start or data_interval_start | ds }}"
WINDOW_END = "{{ params.window_end or macros.ds_add(data_interval_end | ds, -1) }}"
REFERENCE_START = "{{ params.reference_start or macros.ds_add(params.window_start or data_interval_start | ds, -730) }}"
REFERENCE_END = "{{ params.reference_end or macros.ds_add(params.window_start or data_interval_start | ds, -1) }}"

DOC = """
### drift_monitor

Every quarter (or for the window given in the Params form): is the champion still fit for the data?

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

with DAG(
    dag_id="drift_monitor",
    description="Drift and performance of the rainfall champion; a damping policy triggers continual learning",
    schedule="@quarterly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    doc_md=DOC,
    tags=["mlops", "drift"],
    params={
        "source_uri": Param(SOURCE_URI, type="string", title="Source table"),
        "window_start": Param(None, type=["null", "string"], title="Window start",
                              description="First day of the window to check; empty: the run's data interval."),
        "window_end": Param(None, type=["null", "string"], title="Window end",
                            description="Last day of the window to check; empty: the run's data interval."),
        "reference_start": Param(None, type=["null", "string"], title="Reference start",
                                 description="Empty: two years before the window."),
        "reference_end": Param(None, type=["null", "string"], title="Reference end",
                               description="Empty: the day before the window."),
        "drift_share": Param(0.5, type="number", exclusiveMinimum=0, maximum=1, title="Drift share threshold"),
        "drift_mode": Param("full", type="string", enum=["full", "sample", "profile"], title="Drift mode"),
        "max_auc_drop": Param(0.1, type="number", minimum=0, maximum=1, title="Performance: AUC drop that fires"),
        "state_uri": Param(STATE_URI, type="string", title="Policy state file"),
    },
) as dag:
    start_run = StartMlflowRunOperator(task_id="start_mlflow_run", experiment_name=MONITORING_EXPERIMENT)
    reference = PrepareWindowOperator(
        task_id="prepare_reference",
        source_uri="{{ params.source_uri }}",
        time_column="date",
        key_column="day",
        start=REFERENCE_START,
        end=REFERENCE_END,
        holdout_fraction=0.0,
        multiple_outputs=True,
    )
    current = PrepareWindowOperator(
        task_id="prepare_current",
        source_uri="{{ params.source_uri }}",
        time_column="date",
        key_column="day",
        start=WINDOW_START,
        end=WINDOW_END,
        holdout_fraction=0.0,
        multiple_outputs=True,
    )
    validate = DataValidationOperator(
        task_id="validate",
        data_path=current.output["train_uri"],
        suite_path=SUITE_PATH,
        allowed_root=DATA_DIR,
        quarantine_root=f"{DATA_DIR}/quarantine",
    )
    drift = DriftDetectionOperator(
        task_id="detect_drift",
        reference_uri=reference.output["train_uri"],
        current_uri=current.output["train_uri"],
        feature_columns=FEATURES,
        drift_config={"drift_share": "{{ params.drift_share }}", "mode": "{{ params.drift_mode }}"},
        model_uri=f"models:/{MODEL_NAME}@champion",
        mlflow_run_id=start_run.output,
    )
    performance = PerformanceMonitorOperator(
        task_id="monitor_performance",
        labelled_uri=current.output["train_uri"],
        model_name=MODEL_NAME,
        feature_columns=FEATURES,
        target_column=TARGET,
        performance_config={"metric": "auc", "max_drop": "{{ params.max_auc_drop }}"},
        mlflow_run_id=start_run.output,
    )
    policy = TriggerPolicyOperator(
        task_id="trigger_policy",
        window_id=WINDOW_START + "/" + WINDOW_END,
        window_end=WINDOW_END,
        drift=drift.output,
        performance=performance.output,
        policy=POLICY,
        state_uri="{{ params.state_uri }}",
        event_extra={"source_uri": "{{ params.source_uri }}", "window_start": WINDOW_START,
                     "window_end": WINDOW_END, "monitor_run": "{{ dag.dag_id }}/{{ run_id }}"},
        outlets=[DRIFT_ASSET],
    )

    chain(start_run, [reference, current])
    chain(current, validate, [drift, performance], policy)
    chain(reference, drift)
