"""The validation service: read a batch once, run its suite in an ephemeral GX context, summarise, quarantine."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow_mlops.engines import DEFAULT_CHUNK_ROWS, Engine
from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.hooks.storage import Storage, get_storage, is_s3
from airflow_mlops.validation.batches import (
    DataFormat,
    check_batch_exists,
    file_problems,
    parse_batch,
    read_batch_bytes,
    resolve_data_path,
)
from airflow_mlops.validation.chunks import check_file, local_file
from airflow_mlops.validation.context import new_gx_context
from airflow_mlops.validation.digest import bytes_digest
from airflow_mlops.validation.errors import BatchReadError, ExpectationsFailedError
from airflow_mlops.validation.offenders import find_offenders, refine_type_failures, type_failures
from airflow_mlops.validation.quarantine import quarantine_batch
from airflow_mlops.validation.suites import build_gx_suite, load_suite_dict, suite_digest
from airflow_mlops.validation.summary import (
    Severity,
    failure_message,
    jsonable,
    severity_overrides,
    summarize_result,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


@dataclass
class ValidationConfig:
    """
    One validation request.

    :param data_path: the batch: CSV or Parquet, local path, file:// or s3:// URI.
    :param suite_path: the expectation suite, GX JSON.
    :param quarantine_root: where rejected batches are copied; ``None`` keeps no copy.
    :param allowed_root: the batch must resolve under this root; ``None``: the data folder (env
        ``MLOPS_DATA_DIR``, else ``data/`` of the project or working directory); ``"/"`` opts out.
    :param severity_overrides: ``{expectation key or type: "warning" | "critical"}``.
    :param warn_only: expectation keys or types reported without failing.
    :param data_format: ``auto`` (by extension, then content), ``csv`` or ``parquet``.
    :param max_examples: unexpected values kept per failed expectation.
    :param engine: ``pandas`` (the batch in memory), ``streaming`` (chunk by chunk, bounded memory, same
        verdicts) or ``spark`` (GX's Spark datasource on the active or a new Spark session).
    :param chunk_rows: rows per chunk of the streaming engine.
    """

    data_path: str
    suite_path: str
    quarantine_root: str | None = None
    allowed_root: str | None = None
    severity_overrides: Mapping[str, Any] = field(default_factory=dict)
    warn_only: Iterable[str] = ()
    data_format: DataFormat | str = DataFormat.AUTO
    max_examples: int = 5
    engine: Engine | str = Engine.PANDAS
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    overrides: dict[str, Severity] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("data_path", "suite_path"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise MlopsConfigurationError(
                    explain(f"{name} is empty", expected="a local path, file:// or s3:// URI", received=value,
                            hint=f"set {name} on the task (templates are rendered before this check).")
                )
        for name in ("quarantine_root", "allowed_root"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise MlopsConfigurationError(
                    explain(f"{name} is empty", expected="None or a path / s3:// URI", received=value)
                )
        if self.allowed_root is None:
            # Never "anywhere" by default: a Param or XCom must not read (and echo, and quarantine) any file.
            from airflow_mlops.validation.batches import default_data_root

            self.allowed_root = default_data_root()
        try:
            self.data_format = DataFormat(self.data_format)
        except ValueError as exc:
            raise MlopsConfigurationError(
                explain("Unknown data_format", expected=[f.value for f in DataFormat], received=self.data_format)
            ) from exc
        if isinstance(self.warn_only, str):
            self.warn_only = [self.warn_only]
        try:
            self.overrides = severity_overrides(self.severity_overrides, self.warn_only)
        except ValueError as exc:
            raise MlopsConfigurationError(str(exc)) from exc
        self.engine = Engine.parse(self.engine)
        if isinstance(self.chunk_rows, bool) or not isinstance(self.chunk_rows, int) or self.chunk_rows < 1:
            raise MlopsConfigurationError(explain("chunk_rows must be a positive integer", expected=">= 1",
                                                  received=self.chunk_rows))
        if self.max_examples < 0:
            raise MlopsConfigurationError(explain("max_examples is negative", expected=">= 0",
                                                  received=self.max_examples))


@dataclass
class ValidationOutcome:
    """What one validation produced: the XCom summary, GX's full result, and where a rejected batch went."""

    summary: dict[str, Any]
    result: Any = None
    quarantine_uri: str | None = None

    @property
    def success(self) -> bool:
        return bool(self.summary.get("success"))

    def result_json(self) -> dict[str, Any]:
        """GX's full result as JSON-safe data (the artifact logged to MLflow)."""
        if self.result is None:
            return {}
        return jsonable(self.result.to_json_dict(), max_list=10_000)

    def raise_for_failure(self) -> None:
        if not self.success:
            raise ExpectationsFailedError(failure_message(self.summary, self.quarantine_uri), self.summary)


def schema_of(df: pd.DataFrame) -> dict[str, str]:
    return {str(c): str(t) for c, t in df.dtypes.items()}


def run_gx(df: pd.DataFrame, suite: Any, max_examples: int = 5, context: Any = None) -> Any:
    """GX's validation of a DataFrame against a built suite; returns the ``ExpectationSuiteValidationResult``."""
    context = context or new_gx_context()
    batch = (
        context.data_sources.add_pandas("airflow_mlops")
        .add_dataframe_asset("batch")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": df})
    )
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": max(max_examples, 1)}
    return batch.validate(suite, result_format=result_format)


def validate_frame(
    df: pd.DataFrame,
    suite: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    max_examples: int = 5,
) -> tuple[dict[str, Any], Any]:
    """Run a suite dict on a DataFrame: (summary of success, counts and failures; GX's result object)."""
    result = run_gx(df, build_gx_suite(dict(suite)), max_examples)
    return summarize_result(result.to_json_dict(), overrides, max_examples), result


def _utcnow() -> datetime:
    return datetime.now(UTC)


class ValidationService:
    """
    Validates batches: resolve the path, read the bytes once (digest and parse from the same buffer), run the
    suite, summarise, and copy a rejected batch to quarantine.

    :param storage_for: gives the storage for a path (``StorageHook.storage_for`` in Airflow).
    :param clock: the time used for quarantine folder names.
    """

    def __init__(
        self,
        storage_for: Callable[[str], Storage] = get_storage,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.storage_for = storage_for
        self.clock = clock

    def validate(self, config: ValidationConfig,
                 extra_checks: Callable[[pd.DataFrame], list[dict[str, Any]]] | None = None) -> ValidationOutcome:
        """
        Validate one batch; raises only when the batch cannot be read (after quarantining it).

        ``extra_checks(df)`` runs after the suite on the same rows and returns failures of its own
        (``{"expectation": name, "observed_value": ..., "column": ...}``); each counts as a failed critical
        expectation: listed in the summary, quarantined and raised like the suite's.
        """
        data_uri = resolve_data_path(config.data_path, config.allowed_root)
        suite = load_suite_dict(config.suite_path, self.storage_for(config.suite_path))
        if config.engine is not Engine.PANDAS:
            return self._validate_file(config, data_uri, suite)
        storage = self.storage_for(data_uri)
        data = read_batch_bytes(data_uri, storage)
        digest = bytes_digest(data)
        base = {"data_uri": data_uri, "digest": digest, "suite": suite["name"], "suite_digest": suite_digest(suite)}
        try:
            df = parse_batch(data_uri, data, DataFormat(config.data_format))
        except BatchReadError as exc:
            problems = file_problems(data, data_uri)
            summary = {**exc.summary, **base, **({"file_problems": problems} if problems else {})}
            where = self._quarantine(config, data_uri, data, summary)
            first = "".join(f"The file itself is wrong: {p}. " for p in problems)
            message = first + str(exc) + (f" The batch was copied to {where}." if where else "")
            raise BatchReadError(message, {**summary, "quarantine_uri": where}) from exc
        log.info("Validating %s (%d rows, %d columns, %s) against suite %s",
                 data_uri, len(df), df.shape[1], digest, suite["name"])
        core, result = validate_frame(df, suite, config.overrides, config.max_examples)
        if kinds := type_failures(core):
            core = refine_type_failures(core, find_offenders([df], kinds, config.max_examples))
        if extra_checks is not None:
            extra = [{"severity": "critical", "type": "extra_check", **dict(f)} for f in extra_checks(df) or []]
            core = {**core, "failures": [*core["failures"], *extra], "failed": core["failed"] + len(extra),
                    "evaluated": core["evaluated"] + len(extra), "success": core["success"] and not extra}
        summary = {
            "engine": Engine.PANDAS.value,
            "success": core["success"],
            "evaluated": core["evaluated"],
            "failed": core["failed"],
            "warned": core["warned"],
            "unexpected_counts": core["unexpected_counts"],
            "digest": digest,
            "rows": int(len(df)),
            "columns": [str(c) for c in df.columns],
            "schema": schema_of(df),
            "data_uri": data_uri,
            "suite": suite["name"],
            "suite_digest": base["suite_digest"],
            "failures": core["failures"],
            "warnings": core["warnings"],
            **({"file_problems": problems} if (problems := file_problems(data, data_uri)) else {}),
        }
        where = None
        if not summary["success"]:
            where = self._quarantine(config, data_uri, data, summary)
            summary["quarantine_uri"] = where
        return ValidationOutcome(summary=summary, result=result, quarantine_uri=where)

    def _validate_file(self, config: ValidationConfig, data_uri: str, suite: dict[str, Any]) -> ValidationOutcome:
        """The streaming and Spark engines: the file is never read whole into memory (S3: copied to disk)."""
        storage = self.storage_for(data_uri)
        check_batch_exists(data_uri, storage)
        sdigest = suite_digest(suite)
        with local_file(data_uri, storage) as path:
            base = {"data_uri": data_uri, "suite": suite["name"], "suite_digest": sdigest}
            try:
                check = check_file(path, DataFormat(config.data_format))
                base["digest"] = check.digest
                log.info("Validating %s (%d bytes, %s, engine %s) against suite %s",
                         data_uri, check.size, check.digest, config.engine.value, suite["name"])
                if config.engine is Engine.STREAMING:
                    from airflow_mlops.validation.streaming import validate_stream

                    run: Any = validate_stream(path, suite, check.fmt, config.max_examples, config.chunk_rows)
                    log.info("Streamed %d rows in %d chunks, %d pass(es)", run.rows, run.chunks, run.passes)
                else:
                    from airflow_mlops.validation.spark import validate_spark

                    # Spark reads the original location (a cluster cannot see this worker's temporary copy).
                    run = validate_spark(data_uri if is_s3(data_uri) else path, suite, check.fmt,
                                         config.max_examples)
            except BatchReadError as exc:
                problems = file_problems(_head_and_tail(path), data_uri)
                summary = {**exc.summary, **base, **({"file_problems": problems} if problems else {})}
                where = self._quarantine(config, data_uri, None, summary, source_file=path)
                first = "".join(f"The file itself is wrong: {p}. " for p in problems)
                message = first + str(exc) + (f" The batch was copied to {where}." if where else "")
                raise BatchReadError(message, {**summary, "quarantine_uri": where}) from exc
            problems = file_problems(_head_and_tail(path), data_uri)
            core = summarize_result(run.result.to_json_dict(), config.overrides, config.max_examples)
            if config.engine is Engine.STREAMING and (kinds := type_failures(core)):
                from airflow_mlops.validation.chunks import iter_frames

                # A second pass over the failed columns only, on the failure path.
                frames = iter_frames(path, check.fmt, config.chunk_rows, columns=list(kinds),
                                     csv_dtypes=run.csv_dtypes)
                core = refine_type_failures(core, find_offenders(frames, kinds, config.max_examples))
            summary = {
                "engine": config.engine.value,
                "success": core["success"],
                "evaluated": core["evaluated"],
                "failed": core["failed"],
                "warned": core["warned"],
                "unexpected_counts": core["unexpected_counts"],
                "digest": base["digest"],
                "rows": int(run.rows),
                "columns": list(run.columns),
                "schema": dict(run.schema),
                "data_uri": data_uri,
                "suite": suite["name"],
                "suite_digest": sdigest,
                "failures": core["failures"],
                "warnings": core["warnings"],
                **({"file_problems": problems} if problems else {}),
            }
            where = None
            if not summary["success"]:
                where = self._quarantine(config, data_uri, None, summary, source_file=path)
                summary["quarantine_uri"] = where
        return ValidationOutcome(summary=summary, result=run.result, quarantine_uri=where)

    def _quarantine(self, config: ValidationConfig, data_uri: str, data: bytes | None,
                    reason: Mapping[str, Any], source_file: str | None = None) -> str | None:
        if not config.quarantine_root:
            return None
        try:
            return quarantine_batch(data_uri, data, config.quarantine_root, reason,
                                    self.storage_for(config.quarantine_root), now=self.clock(),
                                    source_file=source_file)
        except Exception:
            # The original is untouched, so a failed copy loses nothing: report it and keep the real error.
            log.exception("Could not copy %s to quarantine under %s", data_uri, config.quarantine_root)
            return None


def _head_and_tail(path: str, size: int = 1_000_000) -> bytes:
    """The first megabyte of a file, or all of it when smaller: what the file-level checks read."""
    with open(path, "rb") as fh:
        return fh.read(size)


def validate_batch(config: ValidationConfig, storage_for: Callable[[str], Storage] = get_storage) -> dict[str, Any]:
    """Validate one batch and raise :class:`ExpectationsFailedError` on a critical failure; returns the summary."""
    outcome = ValidationService(storage_for).validate(config)
    outcome.raise_for_failure()
    return outcome.summary
