"""Drift detection, performance monitoring with delayed labels, and the trigger policy as Airflow operators."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.hooks.mlflow import MlflowHook
from airflow_mlops.operators.base import HooksMixin
from airflow_mlops.operators.links import DRIFT_REPORT_URL_KEY, DriftReportLink, artifact_url, mlflow_ui_base

PREDICTION_COLUMN = "prediction"


def _load_model(hook: MlflowHook, model_uri: str, storage: Any = None) -> tuple[Any, str]:
    """
    The module and learning task behind ``models:/<name>@<alias>``, ``models:/<name>/<version>`` (rebuilt from
    the version's weights) or a committed checkpoint URI.
    """
    if model_uri.startswith("models:/"):
        from airflow_mlops.exceptions import MlopsConfigurationError, explain
        from airflow_mlops.registry.inference import resolve_alias
        from airflow_mlops.registry.packaging import load_registered

        ref = model_uri[len("models:/"):]
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = str(resolve_alias(hook.client, name, alias).version)
        elif "/" in ref:
            name, version = ref.split("/", 1)
        else:
            raise MlopsConfigurationError(explain("A model URI names no version or alias",
                                                  expected="models:/<name>@<alias> or models:/<name>/<version>",
                                                  received=model_uri))
        model, meta = load_registered(hook.client, name, version)
        return model, meta.task
    from airflow_mlops.checkpoints import load_model

    model, manifest = load_model(model_uri, storage=storage)
    return model, str((manifest.get("config") or {}).get("task") or "binary")


class DriftDetectionOperator(HooksMixin, BaseOperator):
    """
    Tests a current window against a reference window with Evidently's data drift preset, per column, and the
    champion's predictions on both (prediction drift). The HTML report and the JSON summary go to MLflow; a
    compact summary goes to XCom.

    :param reference_uri: reference table, CSV or Parquet, local or s3:// (templated).
    :param current_uri: current table (templated).
    :param feature_columns: columns tested (and fed to the model, in this order).
    :param drift_config: :class:`~airflow_mlops.drift.report.DriftConfig` fields (templated), e.g.
        ``{"drift_share": 0.5, "mode": "sample", "sample_size": 100000}``.
    :param model_uri: champion to score both windows with, ``models:/<name>@champion`` or a checkpoint URI
        (templated); ``None`` tests no predictions.
    :param profile_uri: where the reference profile is cached in ``profile`` mode (templated); it is built from
        the reference on first use and reused while the reference's digest matches.
    :param mlflow_run_id: run that receives ``drift/<task_id>/report.html`` and ``summary.json`` (templated).
    :param allowed_factories: factories (``module:function`` or ``module:*``) a stored model may be rebuilt
        with, beside the built-in models and env ``MLOPS_ALLOWED_FACTORIES``; the pipeline passes its spec's.
    :param pythonpath: folders put on ``sys.path`` while the champion is rebuilt (templated).
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths; ``None`` reads the AWS environment.
    :param engine: ``pandas`` (default: both windows in memory, as ``drift_config.mode`` says), ``streaming``
        (both windows profiled chunk by chunk in bounded memory with mergeable sketches, the reference profile
        cached at ``profile_uri``) or ``spark`` (the profiles computed by Spark; no ``model_uri``).
    :param allowed_root: ``reference_uri``, ``current_uri`` and ``profile_uri`` must lie under this root, checked before any read or write (templated; default
        the data folder, env ``MLOPS_DATA_DIR``; an s3:// prefix for data on S3; ``"/"`` opts out).
    """

    template_fields: Sequence[str] = ("reference_uri", "current_uri", "drift_config", "model_uri", "profile_uri",
                                      "mlflow_run_id", "pythonpath", "allowed_root", "aws_conn_id")
    template_fields_renderers = {"drift_config": "json"}
    operator_extra_links = (DriftReportLink(),)
    ui_color = "#fdf1e0"

    def __init__(
        self,
        *,
        reference_uri: str,
        current_uri: str,
        feature_columns: list[str],
        drift_config: dict[str, Any] | None = None,
        model_uri: str | None = None,
        profile_uri: str | None = None,
        mlflow_run_id: str | None = None,
        pythonpath: list[str] | None = None,
        allowed_factories: list[str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        engine: str = "pandas",
        allowed_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.allowed_root = allowed_root
        self.pythonpath = pythonpath
        self.allowed_factories = allowed_factories
        self.engine = engine
        self.reference_uri = reference_uri
        self.current_uri = current_uri
        self.feature_columns = feature_columns
        self.drift_config = drift_config
        self.model_uri = model_uri
        self.profile_uri = profile_uri
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.datasets import digest_bytes, read_table
        from airflow_mlops.drift.report import DriftConfig, DriftMode, detect_drift
        from airflow_mlops.engines import Engine

        self.check_data_paths(reference_uri=self.reference_uri, current_uri=self.current_uri,
                              profile_uri=self.profile_uri or None)
        options = dict(self.drift_config or {})
        options.setdefault("columns", list(self.feature_columns))
        if self.model_uri:
            options["prediction_column"] = PREDICTION_COLUMN
        config = DriftConfig.from_dict(options)
        model = None
        if self.model_uri:
            with self.import_path():
                storage = None if self.model_uri.startswith("models:/") else self.storage_hook.storage_for(self.model_uri)
                model = _load_model(self.hook, self.model_uri, storage)
        if Engine.parse(self.engine) is not Engine.PANDAS:
            result = self._drift_at_scale(config, model)
        else:
            current = read_table(self.current_uri, self.storage_hook.storage_for(self.current_uri))
            profile, reference = None, None
            if config.mode is DriftMode.PROFILE and self.profile_uri:
                profile = self._cached_profile(config, model, digest_bytes, read_table)
            else:
                reference = read_table(self.reference_uri, self.storage_hook.storage_for(self.reference_uri))
                if model is not None:
                    reference = self._with_predictions(model, reference)
            if model is not None:
                current = self._with_predictions(model, current)
            result = detect_drift(reference, current, config, profile=profile)
        summary = result.summary
        compact = {**summary.compact(), "reference_uri": self.reference_uri, "current_uri": self.current_uri,
                   "model_uri": self.model_uri}
        self.log.info("Drift (%s mode): %d of %d columns drifted (share %.2f, threshold %.2f)%s; prediction drift %s; "
                      "schema changed %s", summary.mode, len(summary.drifted_columns), len(summary.columns),
                      summary.drift_share, summary.drift_share_threshold,
                      f": {', '.join(summary.drifted_columns)}" if summary.drifted_columns else "",
                      summary.prediction_drift, summary.schema.changed)
        if self.mlflow_run_id:
            compact["report_artifact"] = self._log_to_mlflow(context, result)
        return compact

    def _with_predictions(self, model: tuple[Any, str], df: Any) -> Any:
        """``df`` plus the champion's prediction signal per row: probability, predicted class or value."""
        from airflow_mlops.tasks import predict_scores, prediction_signal

        module, task = model
        missing = [c for c in self.feature_columns if c not in df.columns]
        if missing:
            # A schema change: the champion cannot score this window; the drift summary reports the change.
            self.log.warning("Cannot score the window with the champion, columns missing: %s", missing)
            return df.assign(**{PREDICTION_COLUMN: float("nan")})
        x = df[self.feature_columns].to_numpy(dtype="float32")
        return df.assign(**{PREDICTION_COLUMN: prediction_signal(task, predict_scores(module, x, task))})

    def _cached_profile(self, config: Any, model: Any, digest_bytes: Any, read_table: Any) -> Any:
        from airflow_mlops.drift.profile import ReferenceProfile, build_profile

        storage = self.storage_hook.storage_for(self.reference_uri)
        digest = digest_bytes(storage.read_bytes(self.reference_uri)) + (f"|{self.model_uri}" if model else "")
        cache = self.storage_hook.storage_for(self.profile_uri)
        if cache.exists(self.profile_uri):
            profile = ReferenceProfile.load(cache, self.profile_uri)
            if profile.digest == digest:
                self.log.info("Reference profile from %s", self.profile_uri)
                return profile
        reference = read_table(self.reference_uri, storage)
        if model is not None:
            reference = self._with_predictions(model, reference)
        profile = build_profile(reference, config, digest=digest)
        profile.save(cache, self.profile_uri)
        self.log.info("Built the reference profile of %d rows into %s", profile.rows, self.profile_uri)
        return profile

    def _drift_at_scale(self, config: Any, model: Any) -> Any:
        """Both windows profiled in one pass each (streaming or Spark); the reference profile cached by digest."""
        from airflow_mlops.drift.profile import ReferenceProfile
        from airflow_mlops.drift.scale import drift_between, profile_window
        from airflow_mlops.engines import Engine
        from airflow_mlops.validation.chunks import local_file
        from airflow_mlops.validation.digest import dataset_digest

        engine = Engine.parse(self.engine)
        score = (lambda df: self._with_predictions(model, df)) if model is not None else None
        ref_storage = self.storage_hook.storage_for(self.reference_uri)
        cache = self.storage_hook.storage_for(self.profile_uri) if self.profile_uri else None
        # The digest is hashed from a copy on disk (S3) in pieces: the reference is never held in memory.
        with local_file(self.reference_uri, ref_storage) as path:
            digest = dataset_digest(path) + (f"|{self.model_uri}" if model else "")
            profile = ReferenceProfile.load(cache, self.profile_uri) if cache and cache.exists(self.profile_uri) else None
            if profile is None or profile.digest != digest:
                source = self.reference_uri if engine is Engine.SPARK and "://" in self.reference_uri else path
                profile = profile_window(source, config, engine, digest=digest, transform=score).profile
                if cache is not None:
                    profile.save(cache, self.profile_uri)
                self.log.info("Built the reference profile of %d rows (%s engine)", profile.rows, engine.value)
        with local_file(self.current_uri, self.storage_hook.storage_for(self.current_uri), engine) as path:
            current = profile_window(path, config, engine, current=True, transform=score)
        return drift_between(profile, current, config, engine)

    def _log_to_mlflow(self, context: Context, result: Any) -> str:
        from airflow_mlops.registry.tags import DRIFT_PREDICTION_SCORE, DRIFT_SHARE

        client = self.hook.client
        run_id = str(self.mlflow_run_id)
        folder = f"drift/{self.task_id}"
        client.log_text(run_id, result.html, f"{folder}/report.html")
        client.log_text(run_id, json.dumps(result.summary.to_dict(), indent=1), f"{folder}/summary.json")
        if result.evidently_json:
            client.log_text(run_id, result.evidently_json, f"{folder}/evidently.json")
        client.log_metric(run_id, DRIFT_SHARE, result.summary.drift_share)
        if result.summary.prediction is not None:
            client.log_metric(run_id, DRIFT_PREDICTION_SCORE, result.summary.prediction.score)
        experiment_id = client.get_run(run_id).info.experiment_id
        url = artifact_url(mlflow_ui_base(self.hook.settings), experiment_id, run_id, f"{folder}/report.html")
        if url:
            context["ti"].xcom_push(key=DRIFT_REPORT_URL_KEY, value=url)
        return f"{folder}/report.html"


class PerformanceMonitorOperator(HooksMixin, BaseOperator):
    """
    Once the labels of a past window have arrived, scores the champion on it: the metric with its standard error
    for the window's size (the trigger policy's drop test judges it against the champion's out-of-time windows),
    and for reference the change against the champion's evaluation metric (the ``eval.<metric>`` tags).

    :param labelled_uri: the past window with its labels (templated).
    :param model_name: registered model (templated).
    :param champion_alias: alias of the model being monitored.
    :param feature_columns: model inputs, in order.
    :param target_column: label column.
    :param performance_config: :class:`~airflow_mlops.drift.performance.PerformanceConfig` fields (templated).
    :param baseline: metrics to compare with (templated); default the champion version's ``eval.*`` tags.
    :param mlflow_run_id: run that receives ``monitor.*`` metrics (templated).
    :param allowed_factories: factories (``module:function`` or ``module:*``) a stored model may be rebuilt
        with, beside the built-in models and env ``MLOPS_ALLOWED_FACTORIES``; the pipeline passes its spec's.
    :param pythonpath: folders put on ``sys.path`` while the champion is rebuilt (templated).
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths; ``None`` reads the AWS environment.
    :param allowed_root: ``labelled_uri`` must lie under this root, checked before any read or write (templated; default
        the data folder, env ``MLOPS_DATA_DIR``; an s3:// prefix for data on S3; ``"/"`` opts out).
    """

    template_fields: Sequence[str] = ("labelled_uri", "model_name", "performance_config", "baseline",
                                      "mlflow_run_id", "pythonpath", "allowed_root", "aws_conn_id")
    ui_color = "#fdf1e0"

    def __init__(
        self,
        *,
        labelled_uri: str,
        model_name: str,
        feature_columns: list[str],
        target_column: str,
        champion_alias: str = "champion",
        performance_config: dict[str, Any] | None = None,
        baseline: dict[str, float] | None = None,
        mlflow_run_id: str | None = None,
        pythonpath: list[str] | None = None,
        allowed_factories: list[str] | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        allowed_root: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.allowed_root = allowed_root
        self.pythonpath = pythonpath
        self.allowed_factories = allowed_factories
        self.labelled_uri = labelled_uri
        self.model_name = model_name
        self.feature_columns = feature_columns
        self.target_column = target_column
        self.champion_alias = champion_alias
        self.performance_config = performance_config
        self.baseline = baseline
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.datasets import read_table
        from airflow_mlops.drift.performance import PerformanceConfig, assess
        from airflow_mlops.exceptions import DriftError, explain
        from airflow_mlops.registry.service import RegistryService
        from airflow_mlops.registry.tags import metrics_from_tags, monitor_metric
        from airflow_mlops.tasks import predict_scores

        self.check_data_paths(labelled_uri=self.labelled_uri)
        config = PerformanceConfig.from_dict(self.performance_config)
        service = RegistryService(self.hook.client)
        version = service.version_for_alias(self.model_name, self.champion_alias)
        if version is None:
            raise DriftError(explain(f"No {self.champion_alias!r} version of {self.model_name!r} to monitor",
                                     expected="a promoted model", received=None,
                                     hint="run train_pipeline first."))
        df = read_table(self.labelled_uri, self.storage_hook.storage_for(self.labelled_uri))
        with self.import_path():
            model, task = _load_model(self.hook, f"models:/{self.model_name}/{version.version}")
        scores = predict_scores(model, df[self.feature_columns].to_numpy(dtype="float32"), task)
        baseline = dict(self.baseline) if self.baseline else metrics_from_tags(version.tags or {})
        result = assess(df[self.target_column].to_numpy(), scores, baseline, config, task=task).to_dict()
        result["champion_version"] = str(version.version)
        result["labelled_uri"] = self.labelled_uri
        if self.mlflow_run_id:
            for key in ("value", "drop", "standard_error"):
                if result.get(key) is not None:
                    self.hook.client.log_metric(str(self.mlflow_run_id), monitor_metric(result["metric"], key),
                                                float(result[key]))
        self.log.info("Champion v%s on %s: %s (%s)", version.version, self.labelled_uri,
                      "DEGRADED" if result["degraded"] else "ok", result["reason"])
        return result


class TriggerPolicyOperator(HooksMixin, BaseOperator):
    """
    Folds one window's drift and performance signals into the persisted policy state and decides: nothing,
    fine-tune the champion, or retrain from scratch. On a trigger the outlets (the drift Asset) receive an event
    whose extra carries the decision and the summaries; otherwise the task is skipped and no event is emitted.

    :param window_id: unique id of the window; a retried task decides the same again (templated).
    :param window_end: end of the window, ISO date (templated); cooldown and budget are measured on it.
    :param drift: the drift task's summary (templated).
    :param performance: the performance task's result (templated), or ``None`` while labels are missing.
    :param policy: :class:`~airflow_mlops.drift.policy.TriggerPolicy` fields (templated).
    :param state_uri: JSON file of the policy state, local or s3:// (templated); survives restarts. Used outside
        Airflow's asset state store, and read once to seed the store when it holds no state yet.
    :param allowed_root: ``state_uri`` must lie under this root, checked before any read or write (templated).
        Default: the data folder (env ``MLOPS_DATA_DIR``, else ``data/`` of the project or working directory);
        ``"/"`` opts out explicitly.
    :param state_store: ``auto`` (default): in Airflow, the asset state store of the first outlet Asset (the drift
        Asset, AIP-103), key ``trigger_policy_state``; the file when the task has no such store. ``asset`` requires
        the store; ``file`` always uses ``state_uri``.
    :param event_extra: more values for the asset event (templated), e.g. the window bounds to train on.
    :param mlflow_run_id: monitoring run that records the decision as tags (templated), for the model page's timeline.
    :param mlflow_conn_id: connection of type ``mlflow``.
    :param aws_conn_id: connection for s3:// paths; ``None`` reads the AWS environment.
    """

    #: Key of the policy state in the drift Asset's state store.
    STATE_KEY = "trigger_policy_state"

    template_fields: Sequence[str] = ("window_id", "window_end", "drift", "performance", "policy", "state_uri",
                                      "allowed_root", "event_extra", "mlflow_run_id", "aws_conn_id")
    ui_color = "#fbe3c4"

    def __init__(
        self,
        *,
        window_id: str,
        window_end: str,
        drift: Any,
        state_uri: str,
        performance: Any = None,
        policy: dict[str, Any] | None = None,
        state_store: str = "auto",
        allowed_root: str | None = None,
        event_extra: dict[str, Any] | None = None,
        mlflow_run_id: str | None = None,
        mlflow_conn_id: str = MlflowHook.default_conn_name,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id
        if state_store not in ("auto", "asset", "file"):
            from airflow_mlops.exceptions import MlopsConfigurationError, explain

            raise MlopsConfigurationError(explain("Unknown state_store", expected="'auto', 'asset' or 'file'",
                                                  received=state_store))
        self.state_store = state_store
        self.window_id = window_id
        self.window_end = window_end
        self.drift = drift
        self.performance = performance
        self.policy = policy
        self.state_uri = state_uri
        self.allowed_root = allowed_root
        self.event_extra = event_extra
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_mlops.drift.policy import Observation, PerformanceSample, TriggerPolicy, decide
        from airflow_mlops.validation.batches import check_under_root

        # Before any read or write: a Param must not make the policy create folders and files elsewhere.
        check_under_root(str(self.state_uri), self.allowed_root, what="Policy state_uri")
        policy = TriggerPolicy.from_dict(self.policy)
        drift = dict(self.drift or {})
        performance = dict(self.performance or {})
        signals = set(drift.get("signals") or ())
        if performance.get("degraded"):
            # A fixed max_drop in the monitor's config fired; without one the policy's drop test judges.
            signals.add("performance_drop")
        load, save, where = self._state_backend(context)
        state = load()
        obs = Observation(str(self.window_id), str(self.window_end), frozenset(signals),
                          PerformanceSample.from_value(performance) if performance else None)
        decision = decide(policy, state, obs)
        save(decision.state)
        result = {**decision.to_dict(), "window_end": str(self.window_end), "drift": drift,
                  "performance": performance, "state_store": where, **dict(self.event_extra or {})}
        self.log.info("Window %s: signals %s -> %s (%s)", self.window_id, sorted(signals) or "none",
                      decision.action.value, decision.reason)
        if self.mlflow_run_id:
            from airflow_mlops.registry.tags import POLICY_ACTION, POLICY_REASON, POLICY_SIGNALS

            for key, value in ((POLICY_ACTION, decision.action.value), (POLICY_SIGNALS, ",".join(sorted(signals))),
                               (POLICY_REASON, decision.reason[:5000])):
                self.hook.client.set_tag(str(self.mlflow_run_id), key, value)
        if not decision.triggered:
            context["ti"].xcom_push(key="return_value", value=result)
            from airflow.sdk.exceptions import AirflowSkipException

            # Skipped: a quiet window emits no asset event, so continual learning does not run for nothing.
            raise AirflowSkipException(f"no training: {decision.reason}")
        for outlet in self.outlets or []:
            if hasattr(outlet, "uri"):
                context["outlet_events"][outlet].extra = json.loads(json.dumps(result, default=str))
        return result

    @classmethod
    def state_key(cls, state_uri: str) -> str:
        """
        The policy state's key in the drift Asset's store: one state per state file name, so runs that name
        their own file (a replay, a test, a second policy on the same Asset) keep theirs beside the schedule's.
        """
        import hashlib

        return f"{cls.STATE_KEY}:{hashlib.sha256(state_uri.encode()).hexdigest()[:16]}"

    def _state_backend(self, context: Context) -> tuple[Any, Any, str]:
        """``(load, save, where)``: the drift Asset's state store in Airflow, else the JSON file at ``state_uri``."""
        from airflow_mlops.drift.policy import PolicyState, load_state, save_state

        storage = self.storage_hook.storage_for(self.state_uri)

        def load_file() -> Any:
            return load_state(storage, self.state_uri)

        def save_file(state: Any) -> None:
            save_state(storage, self.state_uri, state)

        accessor = self._asset_store(context) if self.state_store != "file" else None
        if accessor is None:
            if self.state_store == "asset":
                from airflow_mlops.exceptions import MlopsConfigurationError, explain

                raise MlopsConfigurationError(explain("No asset state store for the policy state",
                                                      expected="an outlet Asset and Airflow >= 3.3",
                                                      received=[str(o) for o in self.outlets or []],
                                                      hint="add the drift Asset to outlets or use state_store='file'."))
            return load_file, save_file, f"file:{self.state_uri}"

        key = self.state_key(str(self.state_uri))

        def load_asset() -> Any:
            stored = accessor.get(key)
            if stored is None:
                # First run against the store: carry over a state file written before (outside Airflow or by an
                # older version of this operator).
                return load_file()
            return PolicyState.from_dict(json.loads(stored) if isinstance(stored, str) else stored)

        def save_asset(state: Any) -> None:
            accessor.set(key, state.to_dict())

        return load_asset, save_asset, f"asset:{getattr(self._drift_asset(), 'name', '')}"

    def _drift_asset(self) -> Any:
        return next((o for o in self.outlets or [] if hasattr(o, "uri") and hasattr(o, "name")), None)

    def _asset_store(self, context: Context) -> Any:
        asset = self._drift_asset()
        if asset is None:
            return None
        try:
            store = context["asset_state_store"]  # type: ignore[typeddict-item]
        except KeyError:
            return None
        try:
            return store[asset]
        except (KeyError, TypeError):
            return None
