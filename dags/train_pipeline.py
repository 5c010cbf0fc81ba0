"""train_pipeline: data window -> validation -> torchrun training -> evaluation -> registration -> promotion."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import DAG, Param, chain, task

from airflow_mlops.operators.data import PrepareWindowOperator
from airflow_mlops.operators.registry import (
    EvaluateModelOperator,
    PromoteModelOperator,
    RegisterModelOperator,
)
from airflow_mlops.operators.tracking import StartMlflowRunOperator
from airflow_mlops.operators.training import DistributedTrainingOperator
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.reference.rainfall import (
    DATA_DIR,
    EXPERIMENT,
    FEATURES,
    MODEL_KWARGS,
    MODEL_NAME,
    PRODUCTION_ASSET,
    SOURCE_URI,
    STAGING_ASSET,
    SUITE_PATH,
    TARGET,
)

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

with DAG(
    dag_id="train_pipeline",
    description="Validate, train (torchrun), evaluate, register and promote the rainfall model",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    doc_md=DOC,
    tags=["mlops", "training"],
    params={
        "source_uri": Param(SOURCE_URI, type="string", title="Source table",
                            description="CSV or Parquet table (local path or s3:// URI) with a 'date' column."),
        "window_start": Param("1976-01-01", type="string", format="date", title="Data window start",
                              description="First day of training data (inclusive)."),
        "window_end": Param("1980-12-31", type="string", format="date", title="Data window end",
                            description="Last day of training data (inclusive)."),
        "epochs": Param(4, type="integer", minimum=1, maximum=200, title="Epochs"),
        "processes": Param(2, type="integer", minimum=1, maximum=64, title="Processes per node",
                           description="torchrun workers on this host."),
        "strategy": Param("ddp", type="string", enum=["ddp", "fsdp"], title="Distributed strategy"),
        "learning_rate": Param(0.003, type="number", exclusiveMinimum=0, title="Learning rate"),
        "batch_size": Param(64, type="integer", minimum=1, title="Batch size per process"),
        "min_auc": Param(0.7, type="number", minimum=0, maximum=1, title="Gate: minimum AUC"),
        "min_improvement": Param(0.0, type="number", minimum=0, title="Gate: relative improvement over champion"),
        "require_approval": Param(False, type="boolean", title="Human approval before production",
                                  description="Wait for Approve in the UI between staging and production."),
    },
) as dag:
    start_run = StartMlflowRunOperator(
        task_id="start_mlflow_run",
        experiment_name=EXPERIMENT,
        params_to_log={
            "window_start": "{{ params.window_start }}",
            "window_end": "{{ params.window_end }}",
            "epochs": "{{ params.epochs }}",
            "processes": "{{ params.processes }}",
            "strategy": "{{ params.strategy }}",
            "learning_rate": "{{ params.learning_rate }}",
            "batch_size": "{{ params.batch_size }}",
        },
    )
    window = PrepareWindowOperator(
        task_id="prepare_window",
        source_uri="{{ params.source_uri }}",
        time_column="date",
        key_column="day",
        start="{{ params.window_start }}",
        end="{{ params.window_end }}",
        holdout_fraction=0.2,
        multiple_outputs=True,
    )
    validate = DataValidationOperator(
        task_id="validate",
        data_path=window.output["train_uri"],
        suite_path=SUITE_PATH,
        allowed_root=DATA_DIR,
        quarantine_root=f"{DATA_DIR}/quarantine",
        mlflow_conn_id="mlflow_default",
        mlflow_run_id=start_run.output,
    )
    train = DistributedTrainingOperator(
        task_id="train",
        train_uri=window.output["train_uri"],
        eval_uri=window.output["holdout_uri"],
        target_column=TARGET,
        feature_columns=FEATURES,
        model_kwargs=MODEL_KWARGS,
        strategy="{{ params.strategy }}",
        epochs="{{ params.epochs }}",
        nproc_per_node="{{ params.processes }}",
        learning_rate="{{ params.learning_rate }}",
        batch_size="{{ params.batch_size }}",
        checkpoint_base=f"{DATA_DIR}/checkpoints",
        checkpoint_policy={"every_n_epochs": 1, "keep_last": 2, "keep_best": 1, "monitor": "val_loss"},
        protect_registered_model=MODEL_NAME,
        mlflow_conn_id="mlflow_default",
        mlflow_run_id=start_run.output,
        multiple_outputs=True,
        retries=1,
    )
    evaluate = EvaluateModelOperator(
        task_id="evaluate",
        checkpoint_uri=train.output["checkpoint_uri"],
        eval_uri=window.output["holdout_uri"],
        feature_columns=FEATURES,
        target_column=TARGET,
        model_name=MODEL_NAME,
        mlflow_run_id=start_run.output,
    )
    register = RegisterModelOperator(
        task_id="register",
        model_name=MODEL_NAME,
        checkpoint_uri=train.output["checkpoint_uri"],
        mlflow_run_id=start_run.output,
        validation=validate.output,
        training=train.output,
        evaluation=evaluate.output,
        feature_columns=FEATURES,
        hyperparameters={
            "epochs": "{{ params.epochs }}",
            "processes": "{{ params.processes }}",
            "strategy": "{{ params.strategy }}",
            "learning_rate": "{{ params.learning_rate }}",
            "batch_size": "{{ params.batch_size }}",
            "model_kwargs": MODEL_KWARGS,
            "window": ["{{ params.window_start }}", "{{ params.window_end }}"],
        },
        multiple_outputs=True,
        retries=1,
    )
    promote_staging = PromoteModelOperator(
        task_id="promote_staging",
        model_name=MODEL_NAME,
        version=register.output["version"],
        evaluation=evaluate.output,
        gate={
            "metric": "auc",
            "mode": "max",
            "thresholds": {"auc": "{{ params.min_auc }}"},
            "min_improvement": "{{ params.min_improvement }}",
        },
        aliases=["staging"],
        outlets=[STAGING_ASSET],
    )

    @task.branch(task_id="approval_path")
    def approval_path(params: dict) -> str:
        return "approve_production" if params.get("require_approval") else "promote_production"

    approve = ApprovalOperator(
        task_id="approve_production",
        subject="Promote rainfall v{{ ti.xcom_pull(task_ids='register', key='version') }} to production?",
        body="Gate: {{ ti.xcom_pull(task_ids='promote_staging')['reason'] }}",
        defaults="Reject",
        response_timeout=timedelta(days=3),
    )
    promote_production = PromoteModelOperator(
        task_id="promote_production",
        model_name=MODEL_NAME,
        version=register.output["version"],
        evaluation=evaluate.output,
        gate=None,
        aliases=["production", "champion"],
        outlets=[PRODUCTION_ASSET],
        trigger_rule="none_failed_min_one_success",
    )

    branch = approval_path()
    chain(start_run, window, validate, train, evaluate, register, promote_staging, branch)
    branch >> [approve, promote_production]
    approve >> promote_production
