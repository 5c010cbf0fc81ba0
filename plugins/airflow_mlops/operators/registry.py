"""Operators for evaluation, registration with lineage, and alias promotion in the MLflow registry."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context

if TYPE_CHECKING:
    from airflow_mlops.registry.gate import GateDecision, GatePolicy

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
    Scores the trained model and the current champion on the same frozen evaluation set, with the metrics of
    the learning task (binary: AUC, log loss, Brier, accuracy, F1; multiclass: accuracy, macro-F1, log loss,
    top-k accuracy; regression: RMSE, MAE, R2) plus the user's.

    Override :meth:`compute_metrics` to score differently.

    :param checkpoint_uri: committed checkpoint of the challenger (templated, e.g. the training task's output).
    :param eval_uri: evaluation table, CSV or Parquet (templated).
    :param feature_columns: model inputs, in order.
    :param target_column: label column.
    :param model_name: registered model whose ``champion_alias`` is the baseline (templated).
    :param learning_task: ``binary``, ``multiclass`` or ``regression`` (templated); default the task the
        checkpoint was trained for.
    :param metrics: user metrics, ``module:function`` or ``{"name", "function", "mode"}`` (templated); each is
        called as ``function(y_true, scores)``.
    :param champion_alias: alias of the current champion.
    :param mlflow_run_id: run to log the metrics to (templated).
    :param allowed_factories: factories (``module:function`` or ``module:*``) a stored model may be rebuilt
        with, beside the built-in models and env ``MLOPS_ALLOWED_FACTORIES``; the pipeline passes its spec's.
    :param pythonpath: folders put on ``sys.path`` while models are rebuilt and metrics imported (templated).
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths (templated); ``None`` reads the AWS environment.
    :param allowed_root: ``eval_uri`` must lie under this root, checked before any read or write (templated; default
        the data folder, env ``MLOPS_DATA_DIR``; an s3:// prefix for data on S3; ``"/"`` opts out).
    """

    template_fields: Sequence[str] = ("checkpoint_uri", "eval_uri", "model_name", "learning_task", "metrics",
                                      "mlflow_run_id", "pythonpath", "allowed_root", "aws_conn_id")

    def __init__(
        self,
        *,
        checkpoint_uri: Any,
        eval_uri: Any,
        feature_columns: list[str],
        target_column: str,
        model_name: str,
        learning_task: str | None = None,
        metrics: Any = (),
        champion_alias: str = "champion",
        mlflow_run_id: Any = None,
        pythonpath: Any = None,
        allowed_factories: list[str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        allowed_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.allowed_root = allowed_root
        self.checkpoint_uri = checkpoint_uri
        self.eval_uri = eval_uri
        self.feature_columns = feature_columns
        self.target_column = target_column
        self.model_name = model_name
        self.learning_task = learning_task
        self.metrics = metrics
        self.champion_alias = champion_alias
        self.mlflow_run_id = mlflow_run_id
        self.pythonpath = pythonpath
        self.allowed_factories = allowed_factories
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def compute_metrics(self, task: str, y_true: Any, scores: Any) -> dict[str, float]:
        """Metrics of one model's scores (probabilities, class probabilities or values); both models get these."""
        from airflow_mlops.tasks import compute_metrics

        return compute_metrics(task, y_true, scores, user_metrics=list(self.metrics or ()))

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.checkpoints import load_model
        from airflow_mlops.datasets import digest_bytes, parse_table
        from airflow_mlops.registry.evaluation import evaluate_against_champion
        from airflow_mlops.registry.tags import RUN_EVAL_DIGEST, eval_on_tag, format_number, run_eval_metric
        from airflow_mlops.tasks import as_task

        self.check_data_paths(eval_uri=self.eval_uri)
        storage = self.storage_hook.storage_for(self.eval_uri)
        # Read once: the same bytes are scored and digested.
        eval_bytes = storage.read_bytes(self.eval_uri)
        eval_df = parse_table(eval_bytes, self.eval_uri)
        with self.import_path():
            model, manifest = load_model(self.checkpoint_uri,
                                         storage=self.storage_hook.storage_for(self.checkpoint_uri))
            task = as_task(self.learning_task or (manifest.get("config") or {}).get("task") or "binary")
            evaluation = evaluate_against_champion(
                self.hook.client, model, eval_df, self.feature_columns, self.target_column, self.model_name,
                self.champion_alias, task, lambda y, scores: self.compute_metrics(task.value, y, scores),
                eval_uri=self.eval_uri, eval_digest=digest_bytes(eval_bytes),
            )
        evaluation.checkpoint_uri = self.checkpoint_uri
        result = evaluation.to_dict()
        client = self.hook.client
        if self.mlflow_run_id:
            for who in ("challenger", "champion"):
                for metric, value in (result[who] or {}).items():
                    client.log_metric(self.mlflow_run_id, run_eval_metric(who, metric), value)
            client.set_tag(self.mlflow_run_id, RUN_EVAL_DIGEST, evaluation.eval_digest)
        if evaluation.champion_version:
            # The champion's score on this evaluation set is kept on its own version too, keyed by the set's
            # digest, so every comparison it took part in can be read back from the registry.
            for metric, value in (evaluation.champion or {}).items():
                client.set_model_version_tag(self.model_name, evaluation.champion_version,
                                             eval_on_tag(evaluation.eval_digest, metric), format_number(value))
        self.log.info("%s evaluation on %d rows of %s: challenger %s; champion (v%s) %s", task.value,
                      evaluation.eval_rows, self.eval_uri, _rounded(evaluation.challenger),
                      evaluation.champion_version, _rounded(evaluation.champion))
        return result


class RegisterModelOperator(HooksMixin, BaseOperator):
    """
    Logs the trained model and registers a version with its complete lineage.

    The version is a ``python_function`` model that returns what its task gives per row (probability; class and
    class probabilities; value), rebuilt from weights and spec without unpickling; its signature and input
    example come from the model's real output on the first training rows. A retry of this task never creates a
    second version for the same training run.

    :param model_name: registered model name (templated).
    :param checkpoint_uri: committed checkpoint to register (templated).
    :param mlflow_run_id: the pipeline's MLflow run (templated).
    :param validation: summary returned by the validation task (templated; digest, rows, schema, result).
    :param training: result returned by the training task (templated).
    :param evaluation: result returned by the evaluation task (templated).
    :param hyperparameters: training settings to record (templated).
    :param feature_columns: model inputs, for the signature and input example.
    :param learning_task: ``binary``, ``multiclass`` or ``regression`` (templated); default the checkpoint's.
    :param classes: class labels of a multiclass model, in output order (templated); default 0..C-1.
    :param data_uri: training data location (templated); default the validation summary's ``data_uri``.
    :param parent_version: version this model was fine-tuned from (templated), if any.
    :param description: description of the registered model when it is created (templated).
    :param allowed_factories: factories (``module:function`` or ``module:*``) a stored model may be rebuilt
        with, beside the built-in models and env ``MLOPS_ALLOWED_FACTORIES``; the pipeline passes its spec's.
    :param pythonpath: folders put on ``sys.path`` while the model is rebuilt (templated); the file of a user
        factory is stored with the model, so ``mlflow.pyfunc.load_model`` finds it elsewhere.
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths (templated); ``None`` reads the AWS environment.
    :param allowed_root: the data file the input example is read from must lie under this root, checked before it
        is read (templated; default the data folder, env ``MLOPS_DATA_DIR``; an s3:// prefix for data on S3;
        ``"/"`` opts out).
    """

    template_fields: Sequence[str] = (
        "model_name", "checkpoint_uri", "mlflow_run_id", "validation", "training", "evaluation",
        "hyperparameters", "learning_task", "classes", "data_uri", "parent_version", "description", "pythonpath",
        "allowed_root", "aws_conn_id",
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
        learning_task: str | None = None,
        classes: Any = None,
        data_uri: Any = None,
        parent_version: Any = None,
        description: str | None = None,
        pythonpath: Any = None,
        allowed_factories: list[str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        allowed_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.allowed_root = allowed_root
        self.model_name = model_name
        self.checkpoint_uri = checkpoint_uri
        self.mlflow_run_id = mlflow_run_id
        self.validation = validation
        self.training = training
        self.evaluation = evaluation
        self.hyperparameters = hyperparameters
        self.feature_columns = feature_columns
        self.learning_task = learning_task
        self.classes = classes
        self.data_uri = data_uri
        self.parent_version = parent_version
        self.description = description
        self.pythonpath = pythonpath
        self.allowed_factories = allowed_factories
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.checkpoints import load_model
        from airflow_mlops.datasets import read_table
        from airflow_mlops.registry.lineage_builder import build_lineage
        from airflow_mlops.registry.packaging import PackagedModel, dataset_input
        from airflow_mlops.registry.service import RegistryService
        from airflow_mlops.registry.tags import (
            EVAL_CHAMPION,
            EVAL_DIGEST,
            EVAL_ROWS,
            eval_metric_tag,
            format_number,
        )
        from airflow_mlops.tasks import as_task

        data_uri = self.data_uri or (self.validation or {}).get("data_uri")
        self.check_data_paths(data_uri=data_uri)
        ti = context["ti"]
        dag = context["dag"]
        with self.import_path():
            model, manifest = load_model(self.checkpoint_uri,
                                         storage=self.storage_hook.storage_for(self.checkpoint_uri))
            lineage, packages = build_lineage(
                model=model,
                validation=self.validation or {},
                training=self.training or {},
                hyperparameters=self.hyperparameters or {},
                checkpoint_uri=self.checkpoint_uri,
                data_uri=self.data_uri,
                dag_id=dag.dag_id,
                run_id=context["run_id"],
                task_id=ti.task_id,
                try_number=ti.try_number,
                parent_version=self.parent_version,
                evaluation=self.evaluation,
                checkpoint_manifest=manifest,
                code_path=getattr(dag, "fileloc", None),
                bundle=_bundle(context),
            )
            # The input example is real: the first rows of the data the model was trained on.
            example = read_table(data_uri, self.storage_hook.storage_for(data_uri)).head(5)[list(self.feature_columns)]
            example = example.astype("float64")  # float32 rows convert safely; the reverse is refused
            task = as_task(self.learning_task or (manifest.get("config") or {}).get("task") or "binary")
            meta = PackagedModel(model_spec=manifest["model_spec"], task=task.value,
                                 features=list(self.feature_columns),
                                 classes=list(self.classes) if self.classes else None)
            extra_tags = {}
            for metric, value in ((self.evaluation or {}).get("challenger") or {}).items():
                extra_tags[eval_metric_tag(metric)] = format_number(value)
            if self.evaluation and self.evaluation.get("eval_digest"):
                extra_tags[EVAL_DIGEST] = self.evaluation["eval_digest"]
                extra_tags[EVAL_ROWS] = str(self.evaluation.get("eval_rows", ""))
            if self.evaluation and self.evaluation.get("champion_version"):
                extra_tags[EVAL_CHAMPION] = str(self.evaluation["champion_version"])
            validation = self.validation or {}
            datasets = [(dataset_input(data_uri, validation.get("digest"), f"{self.model_name}-training",
                                       validation.get("schema")), "training")]
            if self.evaluation and self.evaluation.get("eval_uri"):
                datasets.append((dataset_input(self.evaluation["eval_uri"], self.evaluation.get("eval_digest"),
                                               f"{self.model_name}-evaluation"), "evaluation"))
            self.hook.configure()
            mv = RegistryService(self.hook.client).register(
                self.model_name, model, self.mlflow_run_id, lineage,
                f"{dag.dag_id}/{context['run_id']}/{self.checkpoint_uri}", example, packages, extra_tags,
                meta=meta, code_paths=_factory_code_paths(manifest["model_spec"]),
                description="\n\n".join(filter(None, [self.description, _models_page_description(self.model_name)])),
                datasets=datasets,
            )
        url = model_version_url(mlflow_ui_base(self.hook.settings), self.model_name, mv.version)
        if url:
            ti.xcom_push(key=MODEL_VERSION_URL_KEY, value=url)
        self.log.info("Registered %s version %s (%s) from %s", self.model_name, mv.version, task.value,
                      self.checkpoint_uri)
        return {
            "name": self.model_name,
            "version": str(mv.version),
            "task": task.value,
            "run_id": self.mlflow_run_id,
            "model_uri": f"models:/{self.model_name}/{mv.version}",
            "checkpoint_uri": self.checkpoint_uri,
        }


class PromoteModelOperator(HooksMixin, BaseOperator):
    """
    Applies the promotion gate and, when it passes, points the given aliases at the version.

    The registry service decides and records (tags on the version, alias history); this operator maps its
    outcome to XCom, a skip or a failure. A rejected challenger moves no alias and the task ends *skipped*
    (so no Asset event is emitted). Alias moves happen under a registry lock and only if the champion is still
    the one the challenger was evaluated against, so two racing promotions cannot both win. Override
    :meth:`decide_gate` to decide differently.

    :param model_name: registered model (templated).
    :param version: version to promote, or the registration task's output (templated).
    :param evaluation: result of the evaluation task: challenger and champion metrics (templated). Required
        with ``gate``.
    :param gate: promotion gate policy: ``metric``, ``mode`` (default the metric's direction), ``thresholds``,
        ``min_improvement``, ``first_model`` (templated). ``None`` promotes a version that already passed a gate
        (its tag ``mlops.gate.decision`` is ``promote``), e.g. staging -> production after an approval.
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

    def decide_gate(self, challenger: dict[str, float], champion: dict[str, float] | None,
                    policy: GatePolicy) -> GateDecision:
        """Does the challenger pass? Default: :func:`airflow_mlops.registry.gate.decide` (thresholds, champion)."""
        from airflow_mlops.registry.gate import decide

        return decide(challenger, champion, policy)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.exceptions import MlopsConfigurationError, PromotionRejectedError, explain
        from airflow_mlops.registry.gate import GatePolicy
        from airflow_mlops.registry.service import RegistryService

        version = str(self.version["version"] if isinstance(self.version, dict) else self.version)
        aliases = [str(a) for a in (self.aliases or [])]
        if not aliases:
            raise MlopsConfigurationError(explain("No alias to move", expected="aliases such as ['champion']",
                                                  received=self.aliases))
        outcome = RegistryService(self.hook.client).promote_version(
            self.model_name, version, aliases, f"{context['dag'].dag_id}/{context['run_id']}",
            evaluation=self.evaluation, gate=GatePolicy.from_dict(self.gate) if self.gate is not None else None,
            champion_alias=self.champion_alias, decide=self.decide_gate,
        )
        for m in outcome.moves:
            self.log.info("Alias %s of %s: v%s -> v%s (%s)", m.alias, self.model_name, m.from_version,
                          m.to_version, outcome.reason)
        url = model_version_url(mlflow_ui_base(self.hook.settings), self.model_name, version)
        if url:
            context["ti"].xcom_push(key=MODEL_VERSION_URL_KEY, value=url)
        result = outcome.to_dict()
        if not outcome.promoted:
            self.log.warning("Gate rejected %s v%s, no alias moved: %s", self.model_name, version, outcome.reason)
            if self.fail_on_reject:
                raise PromotionRejectedError(outcome.reason)
            # Skipped, not failed: a rejected challenger is a normal outcome, and a skipped task emits no
            # Asset event, so deployments scheduled on the alias do not run for nothing.
            context["ti"].xcom_push(key="return_value", value=result)
            from airflow.sdk.exceptions import AirflowSkipException

            raise AirflowSkipException(f"v{version} not promoted: {outcome.reason}")
        _emit(context, self.outlets, {"model": self.model_name, "version": version, "aliases": aliases,
                                      "reason": outcome.reason, "dag_run": result["moves"][0]["dag_run"]
                                      if result["moves"] else f"{context['dag'].dag_id}/{context['run_id']}",
                                      "action": "promote"})
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


def _rounded(metrics: dict[str, float] | None) -> dict[str, float] | None:
    return None if metrics is None else {k: round(float(v), 4) for k, v in metrics.items()}


def _bundle(context: Context) -> dict[str, Any] | None:
    """The DAG bundle the run's code came from, as Airflow records it (name and version), if any."""
    dag_run = context.get("dag_run")
    name = getattr(dag_run, "bundle_name", None) or getattr(context.get("dag"), "bundle_name", None)
    version = getattr(dag_run, "bundle_version", None)
    return {"name": name, "version": version} if name or version else None


def _models_page_description(name: str) -> str:
    """The registered model's description: where its versions, comparisons, history and lineage are shown."""
    from airflow.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return (f"Registered by airflow-mlops. Versions compared on the same rows, alias history, monitoring and "
            f"lineage: {base}/mlops/models/{name} (Airflow UI: Models).")


def _factory_code_paths(model_spec: dict[str, Any]) -> list[str]:
    """The user's factory package (or module file), stored with the model so that it loads elsewhere."""
    import importlib.util

    top = str(model_spec.get("factory", "")).partition(":")[0].split(".")[0]
    if not top or top == "airflow_mlops":
        return []
    spec = importlib.util.find_spec(top)
    if spec is None:
        return []
    if spec.submodule_search_locations:
        return [list(spec.submodule_search_locations)[0]]
    return [spec.origin] if spec.origin else []


def _emit(context: Context, outlets: Any, extra: dict[str, Any]) -> None:
    """Attach what moved to the Asset events this task emits on success."""
    for outlet in outlets or []:
        if hasattr(outlet, "uri"):
            context["outlet_events"][outlet].extra = extra
