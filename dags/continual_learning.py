"""continual_learning: on a drift Asset event, fine-tune the champion (or retrain from scratch), evaluate, promote."""

from __future__ import annotations

import pendulum
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
    DRIFT_ASSET,
    EXPERIMENT,
    FEATURES,
    MODEL_KWARGS,
    MODEL_NAME,
    PRODUCTION_ASSET,
    SOURCE_URI,
    SUITE_PATH,
    TARGET,
)

REQUEST = "{{ ti.xcom_pull(task_ids='resolve_request') }}"

DOC = """
### continual_learning

Runs on every drift Asset event from `drift_monitor` (or by hand with the Params form).

1. **resolve_request**: the action (`fine_tune` or `retrain`) and the window from the event; the champion's
   version and checkpoint from the registry.
2. **prepare_window**: the recent windows to learn from (the event's window and `recent_days` before it), with a
   deterministic holdout for evaluation; **add_replay** mixes in a seeded sample of older rows.
3. **validate**, then **train**: a fine-tune starts from the champion's checkpoint (stateful); a retrain starts
   from scratch (stateless: schema change, too many fine-tunes in a row).
4. **evaluate** against the champion on the same holdout, **register** with lineage (a fine-tune records its parent
   version), **promote**: the gate moves `champion` and `production` only when the new version is not worse.
"""

with DAG(
    dag_id="continual_learning",
    description="Fine-tune or retrain the rainfall champion when the drift policy triggers",
    schedule=[DRIFT_ASSET],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    render_template_as_native_obj=True,
    doc_md=DOC,
    tags=["mlops", "drift", "training"],
    params={
        "action": Param(None, type=["null", "string"], enum=[None, "fine_tune", "retrain"], title="Action",
                        description="Empty: the action of the triggering drift event."),
        "source_uri": Param(None, type=["null", "string"], title="Source table (empty: the event's)"),
        "window_start": Param(None, type=["null", "string"], title="Window start (empty: the event's)"),
        "window_end": Param(None, type=["null", "string"], title="Window end (empty: the event's)"),
        "recent_days": Param(730, type="integer", minimum=0, title="Days before the window also learnt from"),
        "replay_rows": Param(365, type="integer", minimum=0, title="Replay rows sampled from older data"),
        "epochs": Param(10, type="integer", minimum=1, maximum=200, title="Epochs"),
        "learning_rate": Param(0.001, type="number", exclusiveMinimum=0, title="Learning rate"),
        "processes": Param(1, type="integer", minimum=1, maximum=64, title="Processes per node"),
        "min_auc": Param(0.6, type="number", minimum=0, maximum=1, title="Gate: minimum AUC"),
    },
) as dag:

    @task(task_id="resolve_request")
    def resolve_request(params: dict, triggering_asset_events=None) -> dict:
        """The request from the drift event (or the Params), with the champion to start from."""
        import datetime as dt

        from airflow_mlops.exceptions import MlopsConfigurationError, explain
        from airflow_mlops.hooks.mlflow import MlflowHook
        from airflow_mlops.registry.service import RegistryService

        extra: dict = {}
        for events in (triggering_asset_events or {}).values():
            if events:
                extra = dict(events[-1].extra or {})
        action = params.get("action") or extra.get("action")
        if action not in ("fine_tune", "retrain"):
            raise MlopsConfigurationError(explain("No training action", expected="'fine_tune' or 'retrain' from the "
                                                  "drift event or the Params", received=action))
        end = params.get("window_end") or extra.get("window_end")
        start = params.get("window_start") or extra.get("window_start")
        recent_start = (dt.date.fromisoformat(str(start)) - dt.timedelta(days=int(params["recent_days"]))).isoformat()
        champion = RegistryService(MlflowHook().client).version_for_alias(MODEL_NAME, "champion")
        init = None
        if action == "fine_tune":
            init = (champion.tags or {}).get("lineage.checkpoint.uri") if champion is not None else None
            if not init:
                action = "retrain"  # nothing to start from: learning from scratch is the only way
        return {
            "action": action,
            "source_uri": params.get("source_uri") or extra.get("source_uri") or SOURCE_URI,
            "train_start": recent_start,
            "train_end": str(end),
            "parent_version": str(champion.version) if champion is not None and action == "fine_tune" else None,
            "init_checkpoint_uri": init,
            "reason": extra.get("reason") or "requested by hand",
        }

    request = resolve_request()
    start_run = StartMlflowRunOperator(
        task_id="start_mlflow_run",
        experiment_name=EXPERIMENT,
        params_to_log={"action": REQUEST + "['action']", "parent_version": REQUEST + "['parent_version']"},
    )
    window = PrepareWindowOperator(
        task_id="prepare_window",
        source_uri="{{ ti.xcom_pull(task_ids='resolve_request')['source_uri'] }}",
        time_column="date",
        key_column="day",
        start="{{ ti.xcom_pull(task_ids='resolve_request')['train_start'] }}",
        end="{{ ti.xcom_pull(task_ids='resolve_request')['train_end'] }}",
        holdout_fraction=0.2,
        multiple_outputs=True,
    )

    @task(task_id="add_replay")
    def add_replay(window: dict, request: dict, params: dict) -> str:
        """A seeded sample of rows older than the window, appended to the training rows (rehearsal)."""
        import pandas as pd

        from airflow_mlops.datasets import read_table, write_table

        rows = int(params["replay_rows"])
        if rows == 0:
            return window["train_uri"]
        source = read_table(request["source_uri"])
        older = source[source["date"].astype(str) < window["start"]]
        train = read_table(window["train_uri"])
        if older.empty:
            return window["train_uri"]
        sample = older.sample(n=min(rows, len(older)), random_state=0)
        out = window["train_uri"].replace("train_", "train_replay_")
        # Rows stay in time order: the suite checks that days increase.
        write_table(pd.concat([sample, train]).sort_values("day", kind="stable").reset_index(drop=True), out)
        return out

    train_uri = add_replay(window.output, request)
    validate = DataValidationOperator(
        task_id="validate",
        data_path=train_uri,
        suite_path=SUITE_PATH,
        allowed_root=DATA_DIR,
        quarantine_root=f"{DATA_DIR}/quarantine",
        mlflow_conn_id="mlflow_default",
        mlflow_run_id=start_run.output,
    )
    train = DistributedTrainingOperator(
        task_id="train",
        train_uri=train_uri,
        eval_uri=window.output["holdout_uri"],
        target_column=TARGET,
        feature_columns=FEATURES,
        model_kwargs=MODEL_KWARGS,
        init_checkpoint_uri="{{ ti.xcom_pull(task_ids='resolve_request')['init_checkpoint_uri'] }}",
        epochs="{{ params.epochs }}",
        learning_rate="{{ params.learning_rate }}",
        nproc_per_node="{{ params.processes }}",
        checkpoint_base=f"{DATA_DIR}/checkpoints",
        checkpoint_policy={"every_n_epochs": 1, "keep_last": 2, "keep_best": 1, "monitor": "val_loss"},
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
        parent_version="{{ ti.xcom_pull(task_ids='resolve_request')['parent_version'] }}",
        hyperparameters={
            "action": "{{ ti.xcom_pull(task_ids='resolve_request')['action'] }}",
            "epochs": "{{ params.epochs }}",
            "learning_rate": "{{ params.learning_rate }}",
            "replay_rows": "{{ params.replay_rows }}",
            "model_kwargs": MODEL_KWARGS,
            "window": ["{{ ti.xcom_pull(task_ids='resolve_request')['train_start'] }}",
                       "{{ ti.xcom_pull(task_ids='resolve_request')['train_end'] }}"],
        },
        multiple_outputs=True,
        retries=1,
    )
    promote = PromoteModelOperator(
        task_id="promote",
        model_name=MODEL_NAME,
        version=register.output["version"],
        evaluation=evaluate.output,
        gate={"metric": "auc", "mode": "max", "thresholds": {"auc": "{{ params.min_auc }}"}, "min_improvement": 0.0},
        aliases=["champion", "production"],
        outlets=[PRODUCTION_ASSET],
    )

    chain(request, start_run, window, train_uri, validate, train, evaluate, register, promote)
