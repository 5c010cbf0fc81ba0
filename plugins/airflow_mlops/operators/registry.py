"""Operators for evaluation, registration with lineage, and alias promotion in the MLflow registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.operators.base import HooksMixin
from airflow_mlops.operators.links import (
    MODEL_VERSION_URL_KEY,
    MlflowModelVersionLink,
    mlflow_ui_base,
    model_version_url,
)


class EvaluateModelOperator(HooksMixin, BaseOperator):
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

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.checkpoints import load_model
        from airflow_mlops.datasets import digest_bytes, parse_table
        from airflow_mlops.registry.evaluation import evaluate_against_champion

        storage = self.storage_hook.storage_for(self.eval_uri)
        # Read once: the same bytes are scored and digested.
        eval_bytes = storage.read_bytes(self.eval_uri)
        eval_df = parse_table(eval_bytes, self.eval_uri)
        model, _spec = load_model(self.checkpoint_uri, storage=self.storage_hook.storage_for(self.checkpoint_uri))
        result = evaluate_against_champion(
            self.hook.client, model, eval_df, self.feature_columns, self.target_column,
            self.model_name, self.champion_alias,
        )
        result["eval_uri"] = self.eval_uri
        result["eval_digest"] = digest_bytes(eval_bytes)
        result["checkpoint_uri"] = self.checkpoint_uri
        if self.mlflow_run_id:
            client = self.hook.client
            for who in ("challenger", "champion"):
                for metric, value in (result[who] or {}).items():
                    client.log_metric(self.mlflow_run_id, f"eval.{who}.{metric}", value)
            client.set_tag(self.mlflow_run_id, "mlops.eval_digest", result["eval_digest"])
        if result["champion_version"]:
            # The champion's score on this evaluation set is kept on its own version too, keyed by the set's
            # digest, so every comparison it took part in can be read back from the registry.
            short = result["eval_digest"].split(":")[-1][:12]
            for metric, value in result["champion"].items():
                self.hook.client.set_model_version_tag(
                    self.model_name, result["champion_version"], f"eval_on.{short}.{metric}", repr(float(value))
                )
        self.log.info(
            "Challenger %s; champion (v%s) %s on %s", result["challenger"], result["champion_version"],
            result["champion"], self.eval_uri,
        )
        return result


class RegisterModelOperator(HooksMixin, BaseOperator):
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

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.checkpoints import load_model
        from airflow_mlops.registry.lineage_builder import build_lineage
        from airflow_mlops.registry.service import RegistryService

        ti = context["ti"]
        model, manifest = load_model(self.checkpoint_uri, storage=self.storage_hook.storage_for(self.checkpoint_uri))
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
            checkpoint_manifest=manifest,
        )
        from airflow_mlops.datasets import read_table

        # The input example is real: the first rows of the data the model was trained on.
        data_uri = self.data_uri or (self.validation or {}).get("data_uri")
        example = (
            read_table(data_uri, self.storage_hook.storage_for(data_uri))
            .head(5)[list(self.feature_columns)]
            .to_numpy(dtype="float32")
        )
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


class PromoteModelOperator(HooksMixin, BaseOperator):
    """
    Applies the promotion gate and, when it passes, points the given aliases at the version.

    The decision and its reason are written as tags on the version and in the alias history; a rejected
    challenger moves no alias and the task ends *skipped* (so no Asset event is emitted). Alias moves happen
    under a registry lock and only if the champion is still the one the challenger was evaluated against, so
    two racing promotions cannot both win.

    :param model_name: registered model (templated).
    :param version: version to promote, or the registration task's output (templated).
    :param evaluation: result of the evaluation task: challenger and champion metrics (templated). Required
        with ``gate``.
    :param gate: promotion gate policy: ``metric``, ``mode``, ``thresholds``, ``min_improvement``,
        ``first_model`` (templated). ``None`` promotes a version that already passed a gate (its tag
        ``mlops.gate.decision`` is ``promote``), e.g. staging -> production after an approval.
    :param aliases: aliases to move when the gate passes, e.g. ``["staging"]`` or ``["production", "champion"]``.
    :param champion_alias: alias the challenger was evaluated against; it must not have moved meanwhile.
    :param fail_on_reject: raise instead of skipping when the gate rejects.
    :param mlflow_conn_id: connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = ("model_name", "version", "evaluation", "gate", "aliases")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        version: Any,
        evaluation: Any = None,
        gate: Any = None,
        aliases: Any = ("champion",),
        champion_alias: str = "champion",
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
        self.champion_alias = champion_alias
        self.fail_on_reject = fail_on_reject
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.exceptions import MlopsConfigurationError, PromotionRejectedError, explain
        from airflow_mlops.registry.gate import GateDecision, GatePolicy, decide
        from airflow_mlops.registry.service import DECISION_TAG, REASON_TAG, RegistryService, require_version

        version = str(self.version["version"] if isinstance(self.version, dict) else self.version)
        aliases = [str(a) for a in (self.aliases or [])]
        if not aliases:
            raise MlopsConfigurationError(explain("No alias to move", expected="aliases such as ['champion']",
                                                  received=self.aliases))
        service = RegistryService(self.hook.client)
        mv = require_version(service, self.model_name, version)
        client = self.hook.client
        dag_run = f"{context['dag'].dag_id}/{context['run_id']}"
        expected: dict[str, str | None] = {}
        if self.gate is not None:
            evaluation = self.evaluation or {}
            if not evaluation.get("challenger"):
                raise MlopsConfigurationError(
                    explain("A gate needs the evaluation result", expected="evaluation with 'challenger' metrics",
                            received=sorted(evaluation), hint="pass the evaluation task's output.")
                )
            decision = decide(evaluation["challenger"], evaluation.get("champion"), GatePolicy.from_dict(self.gate))
            expected[self.champion_alias] = evaluation.get("champion_version")
            client.set_model_version_tag(self.model_name, version, DECISION_TAG,
                                         "promote" if decision.promote else "reject")
            client.set_model_version_tag(self.model_name, version, REASON_TAG, decision.reason[:5000])
        else:
            if self.evaluation and "champion_version" in self.evaluation:
                expected[self.champion_alias] = self.evaluation.get("champion_version")
            passed = (mv.tags or {}).get(DECISION_TAG) == "promote"
            reason = (mv.tags or {}).get(REASON_TAG, "")
            decision = GateDecision(
                passed,
                f"promoted after gate: {reason}" if passed
                else f"rejected: v{version} has not passed a promotion gate (tag {DECISION_TAG}="
                f"{(mv.tags or {}).get(DECISION_TAG)!r})",
            )
        moves: list[dict] = []
        promoted = decision.promote
        reason = decision.reason
        if promoted:
            promoted, done, reason = service.promote(self.model_name, version, aliases, dag_run, decision.reason,
                                                     expected=expected)
            moves = [m.to_dict() for m in done]
            for m in done:
                self.log.info("Alias %s of %s: v%s -> v%s (%s)", m.alias, self.model_name, m.from_version,
                              m.to_version, reason)
            if not promoted:
                client.set_model_version_tag(self.model_name, version, DECISION_TAG, "reject")
                client.set_model_version_tag(self.model_name, version, REASON_TAG, reason[:5000])
        else:
            service.record_rejection(self.model_name, version, aliases, dag_run, reason)
        url = model_version_url(mlflow_ui_base(self.hook.settings), self.model_name, version)
        if url:
            context["ti"].xcom_push(key=MODEL_VERSION_URL_KEY, value=url)
        result = {"name": self.model_name, "version": version, "promoted": promoted, "reason": reason,
                  "checks": decision.checks, "moves": moves, "aliases": aliases}
        if not promoted:
            self.log.warning("Gate rejected %s v%s, no alias moved: %s", self.model_name, version, reason)
            if self.fail_on_reject:
                raise PromotionRejectedError(reason)
            # Skipped, not failed: a rejected challenger is a normal outcome, and a skipped task emits no
            # Asset event, so deployments scheduled on the alias do not run for nothing.
            context["ti"].xcom_push(key="return_value", value=result)
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"promotion of v{version} rejected: {reason}")
        _emit(context, self.outlets, {"model": self.model_name, "version": version, "aliases": aliases,
                                      "reason": reason, "dag_run": dag_run, "action": "promote"})
        return result


class RollbackModelOperator(HooksMixin, BaseOperator):
    """
    Puts an alias back on its previous version in one step (from the recorded alias history).

    :param model_name: registered model (templated).
    :param alias: alias to roll back, e.g. ``production`` (templated).
    :param to_version: version to restore (templated); default the alias's previous version.
    :param also_aliases: further aliases moved to the same version, e.g. ``["champion"]``.
    :param reason: why (templated); recorded in the history.
    :param mlflow_conn_id: connection of type ``mlflow``.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "to_version", "reason", "also_aliases")
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        model_name: str,
        alias: str,
        to_version: Any = None,
        also_aliases: Any = (),
        reason: str = "manual rollback",
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.alias = alias
        self.to_version = to_version
        self.also_aliases = also_aliases
        self.reason = reason
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.registry.service import RegistryService

        service = RegistryService(self.hook.client)
        dag_run = f"{context['dag'].dag_id}/{context['run_id']}"
        to_version = str(self.to_version) if self.to_version not in (None, "", "None") else None
        move = service.rollback(self.model_name, self.alias, dag_run, self.reason, to_version=to_version)
        moves = [move.to_dict()]
        for extra in self.also_aliases or ():
            moves.append(service.set_alias(self.model_name, extra, move.to_version, dag_run, self.reason,
                                           action="rollback").to_dict())
        for m in moves:
            self.log.info("Rolled back alias %s of %s: v%s -> v%s (%s)", m["alias"], self.model_name,
                          m["from_version"], m["to_version"], self.reason)
        _emit(context, self.outlets, {"model": self.model_name, "version": move.to_version,
                                      "aliases": [m["alias"] for m in moves], "reason": self.reason,
                                      "dag_run": dag_run, "action": "rollback"})
        return {"name": self.model_name, "version": move.to_version, "moves": moves}


def _emit(context: Context, outlets: Any, extra: dict[str, Any]) -> None:
    """Attach what moved to the Asset events this task emits on success."""
    for outlet in outlets or []:
        if hasattr(outlet, "uri"):
            context["outlet_events"][outlet].extra = extra
