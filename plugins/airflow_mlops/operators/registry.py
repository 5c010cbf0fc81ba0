"""Operators for evaluation, registration with lineage, and alias promotion in the MLflow registry."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.hooks.storage_hook import StorageHook
from airflow_mlops.operators.links import (
    MODEL_VERSION_URL_KEY,
    MlflowModelVersionLink,
    mlflow_ui_base,
    model_version_url,
)


class EvaluateModelOperator(BaseOperator):
    """
    Scores the trained model and the current champion on the same frozen evaluation set.

    :param checkpoint_uri: committed checkpoint of the challenger (templated, e.g. the training task's output).
    :param eval_uri: evaluation table, CSV or Parquet (templated).
    :param feature_columns: model inputs, in order.
    :param target_column: label column.
    :param model_name: registered model whose ``champion_alias`` is the baseline (templated).
    :param champion_alias: alias of the current champion.
    :param mlflow_run_id: run to log the metrics to (templated).
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths; ``None`` reads the AWS environment.
    """

    template_fields: Sequence[str] = ("checkpoint_uri", "eval_uri", "model_name", "mlflow_run_id")

    def __init__(
        self,
        *,
        checkpoint_uri: Any,
        eval_uri: Any,
        feature_columns: list[str],
        target_column: str,
        model_name: str,
        champion_alias: str = "champion",
        mlflow_run_id: Any = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.checkpoint_uri = checkpoint_uri
        self.eval_uri = eval_uri
        self.feature_columns = feature_columns
        self.target_column = target_column
        self.model_name = model_name
        self.champion_alias = champion_alias
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    @cached_property
    def storage_hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.checkpoints import load_model
        from airflow_mlops.datasets import digest_bytes, read_table
        from airflow_mlops.registry.evaluation import evaluate_against_champion

        storage = self.storage_hook.storage_for(self.eval_uri)
        eval_df = read_table(self.eval_uri, storage)
        model, _spec = load_model(self.checkpoint_uri, storage=self.storage_hook.storage_for(self.checkpoint_uri))
        result = evaluate_against_champion(
            self.hook.client, model, eval_df, self.feature_columns, self.target_column,
            self.model_name, self.champion_alias,
        )
        result["eval_uri"] = self.eval_uri
        result["eval_digest"] = digest_bytes(storage.read_bytes(self.eval_uri))
        result["checkpoint_uri"] = self.checkpoint_uri
        if self.mlflow_run_id:
            client = self.hook.client
            for who in ("challenger", "champion"):
                for metric, value in (result[who] or {}).items():
                    client.log_metric(self.mlflow_run_id, f"eval.{who}.{metric}", value)
            client.set_tag(self.mlflow_run_id, "mlops.eval_digest", result["eval_digest"])
        self.log.info(
            "Challenger %s; champion (v%s) %s on %s", result["challenger"], result["champion_version"],
            result["champion"], self.eval_uri,
        )
        return result


class RegisterModelOperator(BaseOperator):
    """
    Logs the trained model (PyTorch flavour) and registers a version with its complete lineage.

    A retry of this task never creates a second version for the same training run.

    :param model_name: registered model name (templated).
    :param checkpoint_uri: committed checkpoint to register (templated).
    :param mlflow_run_id: the pipeline's MLflow run (templated).
    :param validation: summary returned by the validation task (templated; digest, rows, schema, result).
    :param training: result returned by the training task (templated).
    :param evaluation: result returned by the evaluation task (templated).
    :param hyperparameters: training settings to record (templated).
    :param feature_columns: model inputs, for the signature and input example.
    :param data_uri: training data location (templated); default the validation summary's ``data_uri``.
    :param parent_version: version this model was fine-tuned from (templated), if any.
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths; ``None`` reads the AWS environment.
    """

    template_fields: Sequence[str] = (
        "model_name", "checkpoint_uri", "mlflow_run_id", "validation", "training", "evaluation",
        "hyperparameters", "data_uri", "parent_version",
    )
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        checkpoint_uri: Any,
        mlflow_run_id: Any,
        validation: Any,
        training: Any,
        feature_columns: list[str],
        evaluation: Any = None,
        hyperparameters: Any = None,
        data_uri: Any = None,
        parent_version: Any = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.checkpoint_uri = checkpoint_uri
        self.mlflow_run_id = mlflow_run_id
        self.validation = validation
        self.training = training
        self.evaluation = evaluation
        self.hyperparameters = hyperparameters
        self.feature_columns = feature_columns
        self.data_uri = data_uri
        self.parent_version = parent_version
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    @cached_property
    def storage_hook(self) -> StorageHook:
        return StorageHook(aws_conn_id=self.aws_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.checkpoints import load_model
        from airflow_mlops.registry.lineage_builder import build_lineage
        from airflow_mlops.registry.service import RegistryService

        ti = context["ti"]
        model, spec = load_model(self.checkpoint_uri, storage=self.storage_hook.storage_for(self.checkpoint_uri))
        lineage, packages = build_lineage(
            model=model,
            validation=self.validation or {},
            training=self.training or {},
            hyperparameters=self.hyperparameters or {},
            checkpoint_uri=self.checkpoint_uri,
            data_uri=self.data_uri,
            dag_id=context["dag"].dag_id,
            run_id=context["run_id"],
            task_id=ti.task_id,
            try_number=ti.try_number,
            parent_version=self.parent_version,
            evaluation=self.evaluation,
        )
        import numpy as np

        rows = max(1, min(5, int((self.validation or {}).get("rows") or 5)))
        example = np.zeros((rows, len(self.feature_columns)), dtype="float32")
        service = RegistryService(self.hook.client)
        self.hook.configure()
        source_key = f"{context['dag'].dag_id}/{context['run_id']}/{self.checkpoint_uri}"
        extra_tags = {}
        for who in ("challenger",):
            for metric, value in ((self.evaluation or {}).get(who) or {}).items():
                extra_tags[f"eval.{metric}"] = repr(float(value))
        if self.evaluation and self.evaluation.get("eval_digest"):
            extra_tags["eval.dataset_digest"] = self.evaluation["eval_digest"]
        mv = service.register(
            self.model_name, model, self.mlflow_run_id, lineage, source_key, example, packages, extra_tags
        )
        url = model_version_url(mlflow_ui_base(self.hook.settings), self.model_name, mv.version)
        if url:
            ti.xcom_push(key=MODEL_VERSION_URL_KEY, value=url)
        self.log.info("Registered %s version %s from %s", self.model_name, mv.version, self.checkpoint_uri)
        return {
            "name": self.model_name,
            "version": str(mv.version),
            "run_id": self.mlflow_run_id,
            "model_uri": f"models:/{self.model_name}/{mv.version}",
            "checkpoint_uri": self.checkpoint_uri,
        }


class PromoteModelOperator(BaseOperator):
    """
    Applies the promotion gate and, when it passes, points the given aliases at the version.

    The decision and its reason are written as tags on the version; a rejected challenger moves no alias.

    :param model_name: registered model (templated).
    :param version: version to promote (templated).
    :param evaluation: result of the evaluation task: challenger and champion metrics (templated).
    :param gate: promotion gate policy: ``metric``, ``mode``, ``thresholds``, ``min_improvement``,
        ``first_model`` (templated).
    :param aliases: aliases to move when the gate passes, e.g. ``["staging"]`` or ``["champion"]``.
    :param fail_on_reject: raise instead of finishing successfully when the gate rejects.
    :param mlflow_conn_id: connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = ("model_name", "version", "evaluation", "gate", "aliases")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        version: Any,
        evaluation: Any,
        gate: Any = None,
        aliases: Any = ("champion",),
        fail_on_reject: bool = False,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.version = version
        self.evaluation = evaluation
        self.gate = gate
        self.aliases = aliases
        self.fail_on_reject = fail_on_reject
        self.mlflow_conn_id = mlflow_conn_id

    @cached_property
    def hook(self) -> MlflowHook:
        return MlflowHook(mlflow_conn_id=self.mlflow_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.exceptions import PromotionRejectedError
        from airflow_mlops.registry.gate import GatePolicy, decide
        from airflow_mlops.registry.service import DECISION_TAG, REASON_TAG, RegistryService, require_version

        version = str(self.version["version"] if isinstance(self.version, dict) else self.version)
        policy = GatePolicy.from_dict(self.gate)
        evaluation = self.evaluation or {}
        decision = decide(evaluation.get("challenger") or {}, evaluation.get("champion"), policy)
        service = RegistryService(self.hook.client)
        require_version(service, self.model_name, version)
        client = self.hook.client
        client.set_model_version_tag(self.model_name, version, DECISION_TAG,
                                     "promote" if decision.promote else "reject")
        client.set_model_version_tag(self.model_name, version, REASON_TAG, decision.reason[:5000])
        moves = []
        dag_run = f"{context['dag'].dag_id}/{context['run_id']}"
        if decision.promote:
            for alias in list(self.aliases):
                move = service.set_alias(self.model_name, alias, version, dag_run, decision.reason)
                moves.append(move.to_dict())
                self.log.info("Alias %s of %s: v%s -> v%s (%s)", alias, self.model_name, move.from_version,
                              version, decision.reason)
        result = {"name": self.model_name, "version": version, "promoted": decision.promote,
                  "reason": decision.reason, "checks": decision.checks, "moves": moves}
        if not decision.promote:
            self.log.warning("Gate rejected %s v%s, no alias moved: %s", self.model_name, version, decision.reason)
            if self.fail_on_reject:
                raise PromotionRejectedError(decision.reason)
            # Skipped, not failed: a rejected challenger is a normal outcome, and a skipped task emits no
            # Asset event, so deployments scheduled on the alias do not run for nothing.
            context["ti"].xcom_push(key="return_value", value=result)
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"promotion gate rejected v{version}: {decision.reason}")
        for outlet in self.outlets or []:
            if hasattr(outlet, "uri"):
                context["outlet_events"][outlet].extra = {
                    "model": self.model_name, "version": version, "aliases": list(self.aliases),
                    "reason": decision.reason, "dag_run": dag_run,
                }
        return result
