"""Distributed PyTorch training as an Airflow task: torchrun on the worker, checkpoints that survive retries."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.hooks.storage import join
from airflow_mlops.operators.base import HooksMixin
from airflow_mlops.operators.links import RUN_URL_KEY, MlflowRunLink, mlflow_ui_base, run_url
from airflow_mlops.training.config import (
    DEFAULT_MODEL_FACTORY,
    CheckpointPolicy,
    DatasetSpec,
    EarlyStopping,
    TrainingConfig,
)
from airflow_mlops.training.launcher import TorchrunLauncher

#: Where checkpoints go when neither ``checkpoint_dir`` nor ``checkpoint_base`` is given.
CHECKPOINT_BASE_ENV = "MLOPS_CHECKPOINT_BASE"


def _path_part(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]", "_", value)


def _map_index(ti: Any) -> int:
    value = getattr(ti, "map_index", -1)
    return -1 if value is None else int(value)


def default_checkpoint_dir(base: str, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """``<base>/<dag_id>/<run_id>/<task_id>``: stable across tries, so a retry finds the run's checkpoints."""
    task = task_id if map_index < 0 else f"{task_id}_{map_index}"
    return join(base, _path_part(dag_id), _path_part(run_id), _path_part(task))


class DistributedTrainingOperator(HooksMixin, BaseOperator):
    """
    Trains a PyTorch model with torchrun (DDP or FSDP) on this worker; a retry resumes from the run's last
    committed checkpoint. Returns the training result (checkpoint URIs, metrics, throughput) for XCom.

    Extension points: :meth:`build_config` (the run's :class:`TrainingConfig` from the rendered fields) and
    ``launcher_class`` (or the ``launcher`` argument): any class with ``run(config, log_line=..., timeout_s=...,
    extra_env=..., pythonpath=...)`` returning a ``TrainingResult`` and ``kill()``, e.g. a Kubernetes launcher.

    :param train_uri: training table, CSV or Parquet, local or s3:// (templated).
    :param target_column: label column (templated).
    :param feature_columns: input columns in model order (templated).
    :param eval_uri: evaluation table evaluated after every epoch (templated).
    :param learning_task: ``binary``, ``regression`` or ``multiclass`` (templated).
    :param strategy: ``ddp`` or ``fsdp`` (templated).
    :param model_factory: ``module:function`` building the model (templated); the built-in MLP by default.
    :param model_kwargs: factory keyword arguments (templated).
    :param epochs: passes over the training rows (templated).
    :param batch_size: rows per process and step (templated).
    :param learning_rate: AdamW learning rate (templated).
    :param seed: seed of weights, shuffling and dropout; the same seed gives the same weights (templated).
    :param nproc_per_node: processes on this worker (templated).
    :param nnodes: workers taking part; each runs this operator with its own ``node_rank`` (templated).
    :param node_rank: this worker's place among the nodes (templated).
    :param rdzv_endpoint: ``host:port`` of the c10d rendezvous, required for several nodes (templated).
    :param checkpoint_dir: the run's checkpoint folder (templated); default
        ``<checkpoint_base>/<dag_id>/<run_id>/<task_id>``.
    :param checkpoint_base: root of default checkpoint folders (templated); default env ``MLOPS_CHECKPOINT_BASE``,
        else ``$AIRFLOW_HOME/mlops/checkpoints``.
    :param checkpoint_policy: :class:`~airflow_mlops.training.config.CheckpointPolicy` or its dict (templated).
    :param early_stopping: :class:`~airflow_mlops.training.config.EarlyStopping` or its dict (templated), e.g.
        ``{"patience": 2, "validation_share": 0.2, "time_column": "date"}``: ``epochs`` becomes a maximum, the
        newest rows are held out and the best epoch's checkpoint is the result; None: every epoch runs.
    :param init_checkpoint_uri: start from this checkpoint's weights when the run has none yet (templated).
    :param protected_checkpoints: checkpoint URIs retention never deletes (templated).
    :param protect_registered_model: registered model whose versions' checkpoints (lineage tag
        ``lineage.checkpoint.uri``) retention never deletes, e.g. when runs share one ``checkpoint_dir``
        (templated; needs ``mlflow_conn_id``).
    :param training_options: further :class:`~airflow_mlops.training.config.TrainingConfig` fields (templated),
        e.g. ``{"max_steps": 100, "lr_schedule": "cosine"}``.
    :param mlflow_conn_id: MLflow connection; when set, metrics go to an MLflow run.
    :param mlflow_run_id: log into this run (templated), e.g. the pipeline's shared run; without it a run is
        found or created per DAG run and task, so a retry reuses it.
    :param experiment_name: experiment of a created run (templated); default the DAG id.
    :param aws_conn_id: AWS connection for s3:// data and checkpoints; None reads the AWS environment.
    :param pythonpath: folders added to the workers' PYTHONPATH, e.g. ``include/`` for model factories (templated).
    :param timeout_s: stop the workers after this many seconds (templated).
    :param launcher: launcher instance to use instead of ``launcher_class()``.
    :param allowed_root: ``train_uri`` and ``eval_uri`` must lie under this root, checked before the workers start
        (templated; default the data folder, env ``MLOPS_DATA_DIR``; an s3:// prefix for data on S3; ``"/"`` opts
        out). Checkpoint folders are not data paths and are not checked.
    """

    #: What starts the training processes; swap it in a subclass (or pass ``launcher``).
    launcher_class: type = TorchrunLauncher

    template_fields: Sequence[str] = (
        "train_uri", "target_column", "feature_columns", "eval_uri", "learning_task", "strategy", "model_factory",
        "model_kwargs", "epochs", "batch_size", "learning_rate", "seed", "nproc_per_node", "nnodes", "node_rank",
        "rdzv_endpoint", "checkpoint_dir", "checkpoint_base", "checkpoint_policy", "early_stopping", "init_checkpoint_uri",
        "protected_checkpoints", "protect_registered_model", "training_options", "mlflow_run_id", "experiment_name", "pythonpath",
        "timeout_s", "allowed_root", "aws_conn_id",
    )
    template_fields_renderers = {"model_kwargs": "json", "checkpoint_policy": "json", "early_stopping": "json",
                                 "training_options": "json"}
    operator_extra_links = (MlflowRunLink(),)
    ui_color = "#f5d6c6"

    def __init__(
        self,
        *,
        train_uri: str,
        target_column: str,
        feature_columns: list[str] | str,
        eval_uri: str | None = None,
        learning_task: str = "binary",
        strategy: str = "ddp",
        model_factory: str = DEFAULT_MODEL_FACTORY,
        model_kwargs: dict[str, Any] | None = None,
        epochs: int | str = 1,
        batch_size: int | str = 64,
        learning_rate: float | str = 1e-3,
        seed: int | str = 0,
        nproc_per_node: int | str = 1,
        nnodes: int | str = 1,
        node_rank: int | str = 0,
        rdzv_endpoint: str | None = None,
        checkpoint_dir: str | None = None,
        checkpoint_base: str | None = None,
        checkpoint_policy: CheckpointPolicy | dict[str, Any] | None = None,
        early_stopping: EarlyStopping | dict[str, Any] | None = None,
        init_checkpoint_uri: str | None = None,
        protected_checkpoints: list[str] | None = None,
        protect_registered_model: str | None = None,
        training_options: dict[str, Any] | None = None,
        mlflow_conn_id: str | None = None,
        mlflow_run_id: str | None = None,
        experiment_name: str | None = None,
        aws_conn_id: str | None = None,
        pythonpath: list[str] | None = None,
        timeout_s: float | str | None = None,
        launcher: Any = None,
        allowed_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.train_uri = train_uri
        self.target_column = target_column
        self.feature_columns = feature_columns
        self.eval_uri = eval_uri
        self.learning_task = learning_task
        self.strategy = strategy
        self.model_factory = model_factory
        self.model_kwargs = model_kwargs
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.nproc_per_node = nproc_per_node
        self.nnodes = nnodes
        self.node_rank = node_rank
        self.rdzv_endpoint = rdzv_endpoint
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_base = checkpoint_base
        self.checkpoint_policy = checkpoint_policy
        self.early_stopping = early_stopping
        self.init_checkpoint_uri = init_checkpoint_uri
        self.protected_checkpoints = protected_checkpoints
        self.protect_registered_model = protect_registered_model
        self.training_options = training_options
        self.mlflow_conn_id = mlflow_conn_id
        self.mlflow_run_id = mlflow_run_id
        self.experiment_name = experiment_name
        self.aws_conn_id = aws_conn_id
        self.allowed_root = allowed_root
        self.pythonpath = pythonpath
        self.timeout_s = timeout_s
        self.launcher = launcher
        self._launcher: Any = None

    def _checkpoint_dir(self, context: Context) -> str:
        if self.checkpoint_dir:
            return str(self.checkpoint_dir)
        base = self.checkpoint_base or os.environ.get(CHECKPOINT_BASE_ENV) or os.path.join(
            os.environ.get("AIRFLOW_HOME", os.path.expanduser("~/airflow")), "mlops", "checkpoints"
        )
        ti = context["ti"]
        return default_checkpoint_dir(str(base), ti.dag_id, context["run_id"], ti.task_id, _map_index(ti))

    def build_config(self, context: Context, output_dir: str) -> TrainingConfig:
        """The validated run configuration from the rendered fields."""
        features = self.feature_columns
        if isinstance(features, str):
            features = [c.strip() for c in features.split(",") if c.strip()]
        policy = self.checkpoint_policy
        if isinstance(policy, dict):
            policy = CheckpointPolicy(**policy)
        ti = context["ti"]
        fields: dict[str, Any] = {
            "dataset": DatasetSpec(train_uri=self.train_uri, target_column=self.target_column,
                                   feature_columns=list(features), eval_uri=self.eval_uri or None),
            "checkpoint_dir": self._checkpoint_dir(context),
            "output_dir": output_dir,
            "model_factory": self.model_factory,
            "model_kwargs": dict(self.model_kwargs or {}),
            "task": self.learning_task,
            "strategy": self.strategy,
            "epochs": int(self.epochs),
            "batch_size": int(self.batch_size),
            "learning_rate": float(self.learning_rate),
            "seed": int(self.seed),
            "nproc_per_node": int(self.nproc_per_node),
            "nnodes": int(self.nnodes),
            "node_rank": int(self.node_rank),
            "rdzv_endpoint": self.rdzv_endpoint or None,
            "run_name": f"{ti.dag_id}.{ti.task_id}.{context['run_id']}",
            "init_checkpoint_uri": self.init_checkpoint_uri or None,
            "protected_checkpoints": list(self.protected_checkpoints or []),
        }
        if policy is not None:
            fields["checkpoint"] = policy
        early_stopping = self.early_stopping
        if isinstance(early_stopping, str):
            # A DAG that renders templates as text hands over the dict's repr (or "None").
            import ast

            early_stopping = ast.literal_eval(early_stopping) if early_stopping.strip() else None
        if early_stopping:
            fields["early_stopping"] = early_stopping
        fields.update(self.training_options or {})
        return TrainingConfig.from_dict(fields)

    def _mlflow_run(self, context: Context) -> str:
        from airflow_mlops.hooks.mlflow import get_or_create_run

        if self.mlflow_run_id:
            run_id = str(self.mlflow_run_id)
        else:
            ti = context["ti"]
            key = f"{ti.dag_id}/{context['run_id']}/{ti.task_id}"
            map_index = _map_index(ti)
            if map_index >= 0:
                key = f"{key}/{map_index}"
            run_id = get_or_create_run(
                self.mlflow_hook, self.experiment_name or ti.dag_id, key, run_name=f"{ti.task_id} {context['run_id']}",
                tags={"airflow.dag_id": ti.dag_id, "airflow.run_id": context["run_id"], "airflow.task_id": ti.task_id},
            )
        run = self.mlflow_hook.client.get_run(run_id)
        url = run_url(mlflow_ui_base(self.mlflow_hook.settings), run.info.experiment_id, run_id)
        if url:
            context["ti"].xcom_push(key=RUN_URL_KEY, value=url)
        return run_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.training.launcher import try_tempdir

        self.check_data_paths(train_uri=self.train_uri, eval_uri=self.eval_uri or None)
        # Unlike a TemporaryDirectory, a folder a SIGKILLed try left behind is removed by the next try.
        with try_tempdir() as output_dir:
            config = self.build_config(context, output_dir)
            env: dict[str, str] = {}
            if self.aws_conn_id:
                env.update(self.storage_hook.child_env())
            run_id = None
            if self.mlflow_conn_id and self.protect_registered_model:
                from airflow_mlops.registry.service import RegistryService

                registered = RegistryService(self.mlflow_hook.client).registered_checkpoints(
                    str(self.protect_registered_model))
                config.protected_checkpoints = sorted(set(config.protected_checkpoints) | set(registered))
                self.log.info("Retention protects %d checkpoint(s) of registered versions", len(registered))
            if self.mlflow_conn_id:
                run_id = self._mlflow_run(context)
                config.mlflow_run_id = run_id
                env.update(self.mlflow_hook.settings.env())
            self.log.info("Training %s on %d process(es) x %d node(s); checkpoints in %s", config.model_factory,
                          config.nproc_per_node, config.nnodes, config.checkpoint_dir)
            self._launcher = self.launcher if self.launcher is not None else self.launcher_class()
            result = self._launcher.run(
                config,
                log_line=self.log.info,
                timeout_s=float(self.timeout_s) if self.timeout_s else None,
                extra_env=env,
                pythonpath=[str(p) for p in (self.pythonpath or [])],
            )
        out = result.to_dict()
        out["mlflow_run_id"] = run_id
        out["checkpoint_dir"] = config.checkpoint_dir
        self.log.info("Training done: %d steps, metrics %s, checkpoint %s", result.steps, result.metrics,
                      result.checkpoint_uri)
        stop = result.extra.get("early_stopping")
        if stop:
            self.log.info("Early stopping: %s after %s epoch(s) of at most %d; best %s %s at epoch %s (kept: %s)",
                          stop.get("reason"), stop.get("epochs_run"), config.epochs, stop.get("monitor"),
                          stop.get("best"), stop.get("best_epoch"), stop.get("restore_best"))
        return out

    def on_kill(self) -> None:
        if self._launcher is not None:
            self._launcher.kill()
