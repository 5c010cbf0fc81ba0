"""The model lifecycle as a task group, and the reference DAGs built from one declared pipeline.

``ModelLifecycle`` adds validate -> train -> evaluate -> register -> promote (staging, optional human approval,
production and champion) to the DAG being defined; ``training_dag``, ``continual_learning_dag``,
``drift_monitor_dag``, ``batch_inference_dag`` and ``rollback_dag`` build whole DAGs from a
:class:`~airflow_mlops.spec.Pipeline`. Only DAG construction happens here: no I/O, no heavy imports.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, TaskGroup, chain, task

from airflow_mlops.operators.data import PrepareWindowOperator
from airflow_mlops.operators.drift import (
    DriftDetectionOperator,
    PerformanceMonitorOperator,
    TriggerPolicyOperator,
)
from airflow_mlops.operators.inference import BatchInferenceOperator
from airflow_mlops.operators.registry import (
    EvaluateModelOperator,
    PromoteModelOperator,
    RegisterModelOperator,
    RollbackModelOperator,
)
from airflow_mlops.operators.tracking import StartMlflowRunOperator
from airflow_mlops.operators.training import DistributedTrainingOperator
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.registry.tags import WINDOW_END, WINDOW_START, monitoring_experiment
from airflow_mlops.spec import ModelSpec, Pipeline
from airflow_mlops.tasks import MonitorMode, metric_mode

START_DATE = pendulum.datetime(2026, 1, 1, tz="UTC")
RUN_PATH = "{{ run_id | replace(':', '_') | replace('+', '_') }}"


def assets(spec: ModelSpec) -> dict[str, Asset]:
    """The Assets of a model: alias moves (staging, production), drift triggers and predictions."""
    return {
        "staging": Asset(spec.asset_uri("staging"), extra={"model": spec.name, "alias": "staging"}),
        "production": Asset(spec.asset_uri("production"), extra={"model": spec.name, "alias": "production"}),
        "drift": Asset(spec.asset_uri("drift"), extra={"model": spec.name}),
        "predictions": Asset(spec.asset_uri("predictions"), extra={"model": spec.name}),
    }


def gate_param_name(spec: ModelSpec) -> str:
    """``min_auc``, ``min_accuracy``, ``max_rmse``: the Param holding the gate's absolute limit."""
    metric = spec.gate_metric
    return f"{'min' if metric_mode(metric, spec.gate.get('mode')) is MonitorMode.MAX else 'max'}_{metric}"


def gate_param(spec: ModelSpec, default: float) -> Param:
    metric = spec.gate_metric
    higher = metric_mode(metric, spec.gate.get("mode")) is MonitorMode.MAX
    return Param(default, type="number", title=f"Gate: {'minimum' if higher else 'maximum'} {metric}",
                 description=f"The new version needs {metric} {'>=' if higher else '<='} this on the held-out "
                 "rows (and must not be worse than the champion).")


def window_param(pipeline: Pipeline, default: Any, title: str, description: str, nullable: bool = False) -> Param:
    """A window bound typed like the time column: a date picker for dates, a number for numeric columns."""
    numeric = pipeline.model.time_type == "numeric"
    kind: Any = "number" if numeric else "string"
    extra: dict[str, Any] = {} if numeric else {"format": "date"}
    if nullable:
        kind = ["null", kind]
    return Param(default, type=kind, title=title, description=description, **extra)


class ModelLifecycle:
    """
    validate -> train -> evaluate -> register -> promote to ``staging`` -> [approval] -> ``production`` and
    ``champion``, built from a model spec into the DAG being defined (task ids are not prefixed).

    The operator classes are class attributes: a subclass swaps one (e.g. its own validation operator with
    extra checks) without rewriting the group.

    :param pipeline: the declared model and where its data lives.
    :param train_uri: training table (template or XComArg).
    :param eval_uri: held-out table both models are scored on (template or XComArg).
    :param mlflow_run_id: the DAG run's MLflow run (XComArg).
    :param training: keyword arguments of the training operator over the spec's ``training`` defaults
        (templates allowed: ``{"epochs": "{{ params.epochs }}"}``).
    :param hyperparameters: what lineage records as the version's hyperparameters (templates allowed).
    :param gate: gate fields over the spec's gate, e.g. thresholds from Params.
    :param require_approval: ``True`` to wait for a person between staging and production in every run, or the
        name of a boolean DAG Param that decides it per run (e.g. ``"require_approval"``); ``False``: never.
    :param init_checkpoint_uri: fine-tune from these weights (template), for continual learning.
    :param parent_version: version the model is fine-tuned from (template), recorded in lineage.
    :param group_id: the task group's id.
    """

    validation_operator = DataValidationOperator
    training_operator = DistributedTrainingOperator
    evaluation_operator = EvaluateModelOperator
    registration_operator = RegisterModelOperator
    promotion_operator = PromoteModelOperator

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        train_uri: Any,
        eval_uri: Any,
        mlflow_run_id: Any,
        training: dict[str, Any] | None = None,
        hyperparameters: dict[str, Any] | None = None,
        gate: dict[str, Any] | None = None,
        require_approval: Any = False,
        init_checkpoint_uri: Any = None,
        parent_version: Any = None,
        group_id: str = "lifecycle",
    ) -> None:
        spec = pipeline.model
        self.pipeline = pipeline
        model_assets = assets(spec)
        data_root = pipeline.data_root
        with TaskGroup(group_id, prefix_group_id=False, tooltip=f"Lifecycle of {spec.name}") as self.group:
            self.validate = self.validation_operator(
                task_id="validate",
                data_path=train_uri,
                suite_path=pipeline.suite_path,
                allowed_root=data_root,
                quarantine_root=f"{data_root}/quarantine",
                mlflow_conn_id="mlflow_default",
                mlflow_run_id=mlflow_run_id,
            )
            train_kwargs = {
                "checkpoint_base": f"{data_root}/checkpoints",
                "checkpoint_policy": {"every_n_epochs": 1, "keep_last": 2, "keep_best": 1, "monitor": "val_loss"},
                "retries": 1,
                **spec.training,
                **(training or {}),
            }
            self.train = self.training_operator(
                task_id="train",
                train_uri=train_uri,
                eval_uri=eval_uri,
                target_column=spec.target,
                feature_columns=spec.features,
                learning_task=spec.task.value,
                model_factory=spec.factory,
                model_kwargs=spec.model_kwargs(),
                pythonpath=spec.pythonpath,
                init_checkpoint_uri=init_checkpoint_uri,
                protect_registered_model=spec.name,
                allowed_root=data_root,
                mlflow_conn_id="mlflow_default",
                mlflow_run_id=mlflow_run_id,
                multiple_outputs=True,
                **train_kwargs,
            )
            self.evaluate = self.evaluation_operator(
                task_id="evaluate",
                checkpoint_uri=self.train.output["checkpoint_uri"],
                eval_uri=eval_uri,
                feature_columns=spec.features,
                target_column=spec.target,
                model_name=spec.name,
                learning_task=spec.task.value,
                metrics=spec.metrics,
                pythonpath=spec.pythonpath, allowed_factories=[spec.factory],
                mlflow_run_id=mlflow_run_id, allowed_root=data_root,
            )
            self.register = self.registration_operator(
                task_id="register",
                model_name=spec.name,
                checkpoint_uri=self.train.output["checkpoint_uri"],
                mlflow_run_id=mlflow_run_id,
                validation=self.validate.output,
                training=self.train.output,
                evaluation=self.evaluate.output,
                feature_columns=spec.features,
                learning_task=spec.task.value,
                classes=spec.classes,
                parent_version=parent_version,
                description=pipeline.description or None,
                pythonpath=spec.pythonpath, allowed_factories=[spec.factory],
                hyperparameters={"model_kwargs": spec.model_kwargs(), **(hyperparameters or {})},
                allowed_root=data_root,
                multiple_outputs=True,
                retries=1,
            )
            gate_policy = spec.gate_policy(**(gate or {}))
            self.promote_staging = self.promotion_operator(
                task_id="promote_staging",
                model_name=spec.name,
                version=self.register.output["version"],
                evaluation=self.evaluate.output,
                gate=gate_policy,
                aliases=["staging"],
                outlets=[model_assets["staging"]],
            )
            self.promote_production = self.promotion_operator(
                task_id="promote_production",
                model_name=spec.name,
                version=self.register.output["version"],
                evaluation=self.evaluate.output,
                gate=None,
                aliases=["production", "champion"],
                outlets=[model_assets["production"]],
                # After the approval branch one of its two upstreams is skipped on purpose.
                trigger_rule="all_success" if require_approval is False else "none_failed_min_one_success",
            )
            chain(self.validate, self.train, self.evaluate, self.register, self.promote_staging)
            if require_approval is False:
                self.promote_staging >> self.promote_production
            else:
                self._approval(spec, require_approval)

    def _approval(self, spec: ModelSpec, require_approval: Any) -> None:
        from airflow.providers.standard.operators.hitl import ApprovalOperator

        @task.branch(task_id="approval_path")
        def approval_path(params: dict | None = None) -> str:
            # True: always ask; a string: the name of the DAG Param that says whether to ask in this run.
            wanted = (params or {}).get(require_approval) if isinstance(require_approval, str) else require_approval
            flag = wanted if isinstance(wanted, bool) else str(wanted).strip().lower() in ("true", "1", "yes")
            return "approve_production" if flag else "promote_production"

        approve = ApprovalOperator(
            task_id="approve_production",
            subject=f"Promote {spec.name} v{{{{ ti.xcom_pull(task_ids='register', key='version') }}}} to production?",
            body="Gate: {{ ti.xcom_pull(task_ids='promote_staging')['reason'] }}",
            defaults="Reject",
            response_timeout=timedelta(days=3),
        )
        branch = approval_path()
        self.promote_staging >> branch
        branch >> [approve, self.promote_production]
        approve >> self.promote_production

    @property
    def first(self) -> Any:
        return self.validate

    @property
    def last(self) -> Any:
        return self.promote_production


# --- whole DAGs from a pipeline ------------------------------------------------------------------------------------

def _dag_kwargs(doc: str, tags: Sequence[str], **extra: Any) -> dict[str, Any]:
    return {"start_date": START_DATE, "catchup": False, "max_active_runs": 1, "doc_md": doc, "tags": list(tags),
            **extra}


def training_dag(pipeline: Pipeline, *, dag_id: str | None = None, doc: str | None = None,
                 schedule: Any = None, **dag_kwargs: Any) -> DAG:
    """Window -> validate -> train -> evaluate -> register -> staging -> [approval] -> production (Params form)."""
    spec, d = pipeline.model, pipeline.defaults
    dag_id = dag_id or f"{spec.name}_train_pipeline"
    gate_name = gate_param_name(spec)
    params = {
        "source_uri": Param(pipeline.source_uri, type="string", title="Source table",
                            description=f"CSV or Parquet table (under {pipeline.data_root}, or s3://) with the "
                            f"time column '{spec.time_column}'."),
        "window_start": window_param(pipeline, d.get("window_start"), "Data window start",
                                     f"First {spec.time_column} of the training data (inclusive)."
                                     + (f" {d['coverage']}" if d.get("coverage") else "")),
        "window_end": window_param(pipeline, d.get("window_end"), "Data window end",
                                   f"Last {spec.time_column} of the training data (inclusive)."),
        "epochs": Param(d.get("epochs", 4), type="integer", minimum=1, maximum=200, title="Epochs",
                        description="Passes over the training rows."),
        "processes": Param(d.get("processes", 2), type="integer", minimum=1, maximum=64, title="Processes per node",
                           description="torchrun workers on this host (gloo on CPU, nccl on GPU)."),
        "strategy": Param("ddp", type="string", enum=["ddp", "fsdp"], title="Distributed strategy",
                          description="ddp: every process holds the whole model; fsdp: parameters are sharded."),
        "learning_rate": Param(d.get("learning_rate", 0.003), type="number", exclusiveMinimum=0,
                               title="Learning rate", description="AdamW learning rate."),
        "batch_size": Param(d.get("batch_size", 64), type="integer", minimum=1, title="Batch size per process",
                            description="Rows per process and optimizer step."),
        gate_name: gate_param(spec, d.get(gate_name, 0.0)),
        "min_improvement": Param(0.0, type="number", minimum=0, title="Gate: relative improvement over champion",
                                 description="0 accepts a version as good as the champion; 0.01 needs 1 % better."),
        "require_approval": Param(False, type="boolean", title="Human approval before production",
                                  description="Wait for Approve in the UI between staging and production."),
    }
    settings = ("window_start", "window_end", "epochs", "processes", "strategy", "learning_rate", "batch_size")
    with DAG(dag_id=dag_id, description=f"Validate, train (torchrun), evaluate, register and promote {spec.name}",
             schedule=schedule, render_template_as_native_obj=True, params=params,
             **_dag_kwargs(doc or "", ["mlops", "training"], **dag_kwargs)) as dag:
        start_run = StartMlflowRunOperator(
            task_id="start_mlflow_run", experiment_name=spec.experiment_name,
            params_to_log={k: f"{{{{ params.{k} }}}}" for k in settings},
        )
        window = PrepareWindowOperator(
            task_id="prepare_window", source_uri="{{ params.source_uri }}", time_column=spec.time_column,
            time_type=spec.time_type, key_column=spec.key_column, start="{{ params.window_start }}",
            end="{{ params.window_end }}", holdout_fraction=0.2, allowed_root=pipeline.data_root,
            min_rows=d.get("min_rows", 50), multiple_outputs=True,
        )
        lifecycle = ModelLifecycle(
            pipeline, train_uri=window.output["train_uri"], eval_uri=window.output["holdout_uri"],
            mlflow_run_id=start_run.output,
            training={"strategy": "{{ params.strategy }}", "epochs": "{{ params.epochs }}",
                      "nproc_per_node": "{{ params.processes }}", "learning_rate": "{{ params.learning_rate }}",
                      "batch_size": "{{ params.batch_size }}"},
            hyperparameters={**{k: f"{{{{ params.{k} }}}}" for k in settings if not k.startswith("window")},
                             "window": ["{{ params.window_start }}", "{{ params.window_end }}"]},
            gate={"thresholds": {spec.gate_metric: f"{{{{ params.{gate_name} }}}}"},
                  "min_improvement": "{{ params.min_improvement }}"},
            require_approval="require_approval",
        )
        chain(start_run, window, lifecycle.first)
    return dag


def continual_learning_dag(pipeline: Pipeline, *, dag_id: str | None = None, doc: str | None = None,
                           **dag_kwargs: Any) -> DAG:
    """On a drift Asset event: fine-tune the champion (or retrain) on the recent window plus replay, then gate."""
    spec, d = pipeline.model, pipeline.defaults
    dag_id = dag_id or f"{spec.name}_continual_learning"
    model_assets = assets(spec)
    gate_name = gate_param_name(spec)
    numeric = spec.time_type == "numeric"
    unit = "units" if numeric else "days"
    params = {
        "action": Param("event", type="string", enum=["event", "fine_tune", "retrain"], title="Action",
                        description="event: the action of the triggering drift event; fine_tune: start from the "
                        "champion's checkpoint; retrain: start from scratch."),
        "source_uri": Param(None, type=["null", "string"], title="Source table",
                            description="Empty: the drift event's source table."),
        "window_start": window_param(pipeline, None, "Window start", "Empty: the drift event's window.", True),
        "window_end": window_param(pipeline, None, "Window end", "Empty: the drift event's window.", True),
        "recent_span": Param(d.get("recent_span", 0), type="number", minimum=0, title=f"Recent {unit}",
                             description=f"{unit.capitalize()} of {spec.time_column} before the window that are "
                             "learnt from too."),
        "replay_rows": Param(d.get("replay_rows", 365), type="integer", minimum=0, title="Replay rows (most)",
                             description="Most rows sampled (seeded) from older data against forgetting; the plan "
                             "takes as many as the window's training rows, within the budget."),
        "epochs": Param(d.get("fine_tune_epochs", 8), type="integer", minimum=1, maximum=200, title="Epochs (most)",
                        description="Most passes over the rows: the plan (airflow_mlops.continual.plan_fine_tune) "
                        "runs as many as the sample budget pays for, early stopping may end sooner."),
        "fine_tune_cost": Param(None, type=["null", "number"], exclusiveMinimum=0, maximum=1,
                                title="Fine-tune cost (share of a retrain)",
                                description="Empty: what the drift event's decision may spend (its cost: the "
                                "policy's fine_tune_cost, or refresh_cost for a refresh, which also replays "
                                f"{d.get('refresh_replay_ratio', 4.0):g} older rows per new row), else "
                                f"{d.get('fine_tune_cost', 0.03)}. A fine-tune trains on at most this share of a "
                                f"retrain's samples ({d.get('epochs', 4)} epochs over the source's rows up to the "
                                "window's end); a retrain on all of them."),
        "sample_budget": Param(None, type=["null", "integer"], minimum=1, title="Sample budget",
                               description="Rows x epochs this training may use; empty: from fine_tune_cost."),
        "validation_share": Param(0.2, type="number", exclusiveMinimum=0, exclusiveMaximum=1,
                                  title="Early-stopping share",
                                  description="The newest share of the window's training rows (by "
                                  f"{spec.time_column}) held out to stop the training when their loss stops "
                                  "improving; the best epoch is registered."),
        "patience": Param(2, type="integer", minimum=0, title="Early-stopping patience",
                          description="Epochs without improvement before training stops; 0: no early stopping."),
        "learning_rate": Param(d.get("fine_tune_learning_rate", 0.001), type="number", exclusiveMinimum=0,
                               title="Learning rate", description="AdamW learning rate of the fine-tune."),
        "processes": Param(1, type="integer", minimum=1, maximum=64, title="Processes per node",
                           description="torchrun workers on this host."),
        gate_name: gate_param(spec, d.get(f"fine_tune_{gate_name}", d.get(gate_name, 0.0))),
    }

    def request(key: str) -> str:
        return f"{{{{ ti.xcom_pull(task_ids='resolve_request')['{key}'] }}}}"

    with DAG(dag_id=dag_id, description=f"Fine-tune or retrain {spec.name} when the drift policy triggers",
             schedule=[model_assets["drift"]], render_template_as_native_obj=True, params=params,
             **_dag_kwargs(doc or "", ["mlops", "drift", "training"], **dag_kwargs)) as dag:

        @task(task_id="resolve_request")
        def resolve_request(params: dict, triggering_asset_events: Any = None) -> dict:
            """The request from the drift event (or the Params), with the champion to start from."""
            from airflow_mlops.continual import resolve_request as resolve

            extra: dict = {}
            for events in (triggering_asset_events or {}).values():
                if events:
                    extra = dict(events[-1].extra or {})
            return resolve(spec, pipeline.source_uri, params, extra, data_root=pipeline.data_root)

        @task(task_id="plan_training")
        def plan_training(window: dict, request: dict, params: dict) -> dict:
            """The budgeted plan from the rows there are: replay sample, epochs, the newest rows for early stopping."""
            from airflow_mlops.continual import prepare_fine_tune

            cost = (params.get("fine_tune_cost") or request.get("cost") or request.get("fine_tune_cost")
                    or d.get("fine_tune_cost", 0.03))
            budget = params.get("sample_budget")
            refresh = bool(request.get("refresh"))
            return prepare_fine_tune(
                spec, window, request["source_uri"], action=request["action"], max_epochs=int(params["epochs"]),
                fine_tune_cost=float(cost), sample_budget=None if budget in (None, "") else float(budget),
                retrain_epochs=int(d.get("epochs", 4)), max_replay_rows=int(params["replay_rows"]),
                validation_share=float(params["validation_share"]), patience=int(params["patience"]),
                replay_ratio=float(d.get("refresh_replay_ratio", 4.0)) if refresh else 1.0,
                data_root=pipeline.data_root,
            )

        def planned(key: str) -> str:
            return f"{{{{ ti.xcom_pull(task_ids='plan_training')['{key}'] }}}}"

        req = resolve_request()
        start_run = StartMlflowRunOperator(
            task_id="start_mlflow_run", experiment_name=spec.experiment_name,
            params_to_log={"action": request("action"), "parent_version": request("parent_version")},
        )
        window = PrepareWindowOperator(
            task_id="prepare_window", source_uri=request("source_uri"), time_column=spec.time_column,
            time_type=spec.time_type, key_column=spec.key_column, start=request("train_start"),
            end=request("train_end"), holdout_fraction=0.2, allowed_root=pipeline.data_root,
            min_rows=d.get("min_rows", 50), multiple_outputs=True,
        )
        plan = plan_training(window.output, req)
        lifecycle = ModelLifecycle(
            pipeline, train_uri=planned("train_uri"), eval_uri=window.output["holdout_uri"],
            mlflow_run_id=start_run.output,
            training={"epochs": planned("epochs"), "learning_rate": "{{ params.learning_rate }}",
                      "nproc_per_node": "{{ params.processes }}", "early_stopping": planned("early_stopping")},
            init_checkpoint_uri=request("init_checkpoint_uri"),
            parent_version=request("parent_version"),
            hyperparameters={"action": request("action"), "max_epochs": planned("epochs"),
                             "learning_rate": "{{ params.learning_rate }}", "replay_rows": planned("replay_rows"),
                             "new_rows": planned("new_rows"), "sample_budget": planned("sample_budget"),
                             "early_stopping": planned("early_stopping"),
                             "window": [request("train_start"), request("train_end")]},
            gate={"thresholds": {spec.gate_metric: f"{{{{ params.{gate_name} }}}}"}, "min_improvement": 0.0},
        )
        chain(req, start_run, window, plan, lifecycle.first)
    return dag


def quarterly() -> Any:
    """
    Every quarter, with a data interval that spans the quarter before the run.

    Airflow 3's cron schedules (``"@quarterly"``) use ``CronTriggerTimetable``, whose data interval is the
    logical date alone (start == end): a monitor needs the period that just ended, which
    ``CronDataIntervalTimetable`` gives (a run at 2026-10-01 covers 2026-07-01 to 2026-10-01).
    """
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable("0 0 1 1,4,7,10 *", timezone="UTC")


def drift_monitor_dag(pipeline: Pipeline, *, policy: dict[str, Any], dag_id: str | None = None,
                      doc: str | None = None, schedule: Any = None, reference_span: int = 730,
                      **dag_kwargs: Any) -> DAG:
    """
    Window + reference -> validate -> drift and performance of the champion -> damping policy -> drift Asset.

    Give ``schedule`` a data-interval timetable (e.g. :func:`quarterly`) for date columns: a scheduled run then
    checks the interval that just ended; numeric time columns take their window from the Params.
    """
    spec, d = pipeline.model, pipeline.defaults
    dag_id = dag_id or f"{spec.name}_drift_monitor"
    model_assets = assets(spec)
    numeric = spec.time_type == "numeric"
    if numeric:
        # A numeric time column has no calendar: the window comes from the Params (or the caller's templates).
        window_start = "{{ params.window_start }}"
        window_end = "{{ params.window_end }}"
        ref_start = f"{{{{ params.reference_start if params.reference_start is not none else params.window_start - {reference_span} }}}}"
        ref_end = "{{ params.reference_end if params.reference_end is not none else params.window_start - 1 }}"
    else:
        # With a data-interval timetable a scheduled run checks the interval that just ended; replay_offset_days
        # moves it back into the data's own time (bundled history, or data that arrives late).
        interval_start = "macros.ds_add(data_interval_start | ds, -params.replay_offset_days)"
        interval_last = "macros.ds_add(data_interval_end | ds, -1 - params.replay_offset_days)"
        start_expr = f"(params.window_start or {interval_start})"
        window_start = f"{{{{ {start_expr} }}}}"
        window_end = f"{{{{ params.window_end or {interval_last} }}}}"
        ref_start = f"{{{{ params.reference_start or macros.ds_add({start_expr}, -{reference_span}) }}}}"
        ref_end = f"{{{{ params.reference_end or macros.ds_add({start_expr}, -1) }}}}"
    unit = "units" if numeric else "days"
    metric = d.get("monitor_metric") or spec.gate_metric
    params = {
        "source_uri": Param(pipeline.source_uri, type="string", title="Source table",
                            description=f"The table the windows are cut from (under {pipeline.data_root}, or s3://)."),
        "window_start": window_param(pipeline, None, "Window start", "First value of the window to check; "
                                     + ("required." if numeric else "empty: the run's data interval."), True),
        "window_end": window_param(pipeline, None, "Window end", "Last value of the window to check; "
                                   + ("required." if numeric else "empty: the run's data interval."), True),
        "reference_start": window_param(pipeline, None, "Reference start",
                                        f"Empty: {reference_span} {unit} before the window.", True),
        "reference_end": window_param(pipeline, None, "Reference end", "Empty: just before the window.", True),
        "drift_share": Param(0.5, type="number", exclusiveMinimum=0, maximum=1, title="Drift share threshold",
                             description="Share of drifted feature columns that counts as data drift."),
        "drift_mode": Param("full", type="string", enum=["full", "sample", "profile"], title="Drift mode",
                            description="full: Evidently on every row; sample: a seeded sample; profile: a cached "
                            "reference profile."),
        "max_drop": Param(d.get("max_drop"), type=["null", "number"], minimum=0,
                          title=f"Performance: fixed {metric} drop",
                          description=f"Empty (default): the policy judges {metric} against the champion's own "
                          "out-of-time windows and the metric's noise. A number: a worsening of this much against "
                          "the champion's evaluation fires the performance signal."),
        "state_uri": Param(f"{pipeline.data_root}/drift/{spec.name}_policy_state.json", type="string",
                           title="Policy state file", description="JSON file of the policy's state when the drift "
                           "Asset's state store is not available (runs outside Airflow); seeds the store once."),
    }
    if not numeric:
        params["replay_offset_days"] = Param(
            int(d.get("replay_offset_days", 0)), type="integer", minimum=0, title="Replay offset (days)",
            description="A scheduled run checks its data interval moved back by this many days: 0 for live data; "
            + (f"{d['replay_offset_days']} replays the bundled history ({d.get('coverage', '')})"
               if d.get("replay_offset_days") else "set it to replay older data on the schedule") + ".")
    with DAG(dag_id=dag_id, description=f"Drift and performance of the {spec.name} champion; a damping policy "
             "triggers continual learning", schedule=schedule, render_template_as_native_obj=True, params=params,
             **_dag_kwargs(doc or "", ["mlops", "drift"], **dag_kwargs)) as dag:
        start_run = StartMlflowRunOperator(
            task_id="start_mlflow_run", experiment_name=monitoring_experiment(spec.name),
            params_to_log={WINDOW_START: window_start, WINDOW_END: window_end},
        )
        cut = {"source_uri": "{{ params.source_uri }}", "time_column": spec.time_column, "time_type": spec.time_type,
               "key_column": spec.key_column, "holdout_fraction": 0.0, "allowed_root": pipeline.data_root,
               "min_rows": d.get("monitor_min_rows", 1), "multiple_outputs": True}
        reference = PrepareWindowOperator(task_id="prepare_reference", start=ref_start, end=ref_end, **cut)
        current = PrepareWindowOperator(task_id="prepare_current", start=window_start, end=window_end, **cut)
        validate = DataValidationOperator(
            task_id="validate", data_path=current.output["train_uri"], suite_path=pipeline.suite_path,
            allowed_root=pipeline.data_root, quarantine_root=f"{pipeline.data_root}/quarantine",
        )
        drift = DriftDetectionOperator(
            task_id="detect_drift", reference_uri=reference.output["train_uri"],
            current_uri=current.output["train_uri"], feature_columns=spec.features,
            drift_config={"drift_share": "{{ params.drift_share }}", "mode": "{{ params.drift_mode }}"},
            model_uri=f"models:/{spec.name}@champion", pythonpath=spec.pythonpath, mlflow_run_id=start_run.output,
            allowed_factories=[spec.factory], allowed_root=pipeline.data_root,
        )
        performance = PerformanceMonitorOperator(
            task_id="monitor_performance", labelled_uri=current.output["train_uri"], model_name=spec.name,
            feature_columns=spec.features, target_column=spec.target, pythonpath=spec.pythonpath,
            allowed_factories=[spec.factory],
            performance_config={"metric": metric, "max_drop": "{{ params.max_drop }}",
                                "min_rows": d.get("monitor_min_rows", 30)},
            mlflow_run_id=start_run.output, allowed_root=pipeline.data_root,
        )
        trigger = TriggerPolicyOperator(
            task_id="trigger_policy", window_id=window_start + "/" + window_end, window_end=window_end,
            drift=drift.output, performance=performance.output, policy=policy, state_uri="{{ params.state_uri }}",
            allowed_root=pipeline.data_root, mlflow_run_id=start_run.output,
            event_extra={"source_uri": "{{ params.source_uri }}", "window_start": window_start,
                         "window_end": window_end, "monitor_run": "{{ dag.dag_id }}/{{ run_id }}",
                         # continual learning sizes its fine-tune to it
                         **({"fine_tune_cost": policy["fine_tune_cost"]} if "fine_tune_cost" in policy else {})},
            outlets=[model_assets["drift"]],
        )
        chain(start_run, [reference, current])
        chain(current, validate, [drift, performance], trigger)
        chain(reference, drift)
    return dag


def batch_inference_dag(pipeline: Pipeline, *, dag_id: str | None = None, doc: str | None = None,
                        passthrough: Sequence[str] = (), **dag_kwargs: Any) -> DAG:
    """Score a window with ``models:/<name>@<alias>``; runs whenever ``production`` moves, or on demand."""
    spec, d = pipeline.model, pipeline.defaults
    dag_id = dag_id or f"{spec.name}_batch_inference"
    model_assets = assets(spec)
    params = {
        "source_uri": Param(pipeline.source_uri, type="string", title="Source table",
                            description=f"The table to score (under {pipeline.data_root}, or s3://)."),
        "window_start": window_param(pipeline, d.get("score_start"), "First value to score",
                                     f"First {spec.time_column} of the rows to score."),
        "window_end": window_param(pipeline, d.get("score_end"), "Last value to score",
                                   f"Last {spec.time_column} of the rows to score."),
        "alias": Param("production", type="string", enum=["production", "staging", "champion"], title="Alias",
                       description="The alias whose version scores the rows."),
    }
    with DAG(dag_id=dag_id, description=f"Score new data with models:/{spec.name}@production",
             schedule=[model_assets["production"]], params=params,
             **_dag_kwargs(doc or "", ["mlops", "inference"], **dag_kwargs)) as dag:
        batch = PrepareWindowOperator(
            task_id="prepare_batch", source_uri="{{ params.source_uri }}", time_column=spec.time_column,
            time_type=spec.time_type, key_column=spec.key_column, start="{{ params.window_start }}",
            end="{{ params.window_end }}", holdout_fraction=0.0, min_rows=1, allowed_root=pipeline.data_root,
            output_dir=f"{pipeline.data_root}/inference/{spec.name}/{RUN_PATH}", multiple_outputs=True,
        )
        score = BatchInferenceOperator(
            task_id="score", model_name=spec.name, alias="{{ params.alias }}", input_uri=batch.output["train_uri"],
            output_uri=f"{pipeline.data_root}/predictions/{spec.name}/{RUN_PATH}/predictions.csv",
            feature_columns=spec.features, pythonpath=spec.pythonpath, allowed_factories=[spec.factory],
            passthrough_columns=list(passthrough) or [c for c in (spec.key_column, spec.time_column) if c],
            allowed_root=pipeline.data_root,
            outlets=[model_assets["predictions"]],
        )
        chain(batch, score)
    return dag


def rollback_dag(pipeline: Pipeline, *, dag_id: str | None = None, doc: str | None = None, **dag_kwargs: Any) -> DAG:
    """Put ``production`` (and ``champion``) back on the previous version from the alias history, in one step."""
    spec = pipeline.model
    dag_id = dag_id or f"{spec.name}_model_rollback"
    params = {
        "alias": Param("production", type="string", enum=["production", "staging"], title="Alias",
                       description="The alias to move back; champion follows production."),
        "to_version": Param(None, type=["null", "integer"], minimum=1, title="Version to restore",
                            description="Empty: the version the alias held before its current one."),
        "reason": Param("manual rollback", type="string", minLength=3, title="Reason",
                        description="Recorded in the alias history and the Asset event."),
    }
    with DAG(dag_id=dag_id, description=f"Roll an alias of {spec.name} back to its previous version", schedule=None,
             params=params, **_dag_kwargs(doc or "", ["mlops", "registry"], **dag_kwargs)) as dag:
        RollbackModelOperator(
            task_id="rollback", model_name=spec.name, alias="{{ params.alias }}",
            to_version="{{ params.to_version or '' }}", also_aliases=["champion"], reason="{{ params.reason }}",
            outlets=[assets(spec)["production"]],
        )
    return dag
