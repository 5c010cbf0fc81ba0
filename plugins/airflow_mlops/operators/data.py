"""Operators that prepare data batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from airflow_mlops.operators.base import HooksMixin


class PrepareWindowOperator(HooksMixin, BaseOperator):
    """
    Cuts a time window out of a source table into a training file and a deterministic holdout file.

    :param source_uri: CSV or Parquet table, local path or s3:// URI (templated).
    :param time_column: column compared with ``start`` and ``end`` as what it is: timestamps for datetime, date
        and ISO-date columns, numbers for numeric columns (never as text).
    :param start: first value of the window, inclusive (templated).
    :param end: last value of the window, inclusive (templated).
    :param output_dir: where the window files go (templated); default ``<source dir>/windows/<run_id>``.
    :param key_column: column hashed to choose holdout rows (stable across reruns); default the row number.
    :param holdout_fraction: share of rows held out for evaluation.
    :param min_rows: fail when the window holds fewer rows.
    :param time_type: ``auto`` (from the column's dtype), ``date`` or ``numeric``.
    :param allowed_root: the source and the output folder must lie under this root (templated; default the data
        folder, env ``MLOPS_DATA_DIR``; ``"/"`` opts out): a path from a Param or XCom that leaves it is refused
        before anything is read or written. The bounds are typed (a date or a number, as ``time_type`` says)
        before either is used in a file name.
    :param aws_conn_id: connection for s3:// paths, the source and the output (templated); ``None`` reads the
        AWS environment.
    """

    template_fields: Sequence[str] = ("source_uri", "start", "end", "output_dir", "allowed_root", "aws_conn_id")
    ui_color = "#e8f4fa"

    def __init__(
        self,
        *,
        source_uri: str,
        time_column: str,
        start: str,
        end: str,
        output_dir: str | None = None,
        key_column: str | None = None,
        holdout_fraction: float = 0.2,
        min_rows: int = 50,
        fmt: str = "csv",
        time_type: str = "auto",
        allowed_root: str | None = None,
        aws_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source_uri = source_uri
        self.time_column = time_column
        self.start = start
        self.end = end
        self.output_dir = output_dir
        self.key_column = key_column
        self.holdout_fraction = holdout_fraction
        self.min_rows = min_rows
        self.fmt = fmt
        self.time_type = time_type
        self.allowed_root = allowed_root
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict:
        from airflow_mlops.datasets import WindowSpec, check_window_bound, cut_window
        from airflow_mlops.hooks.storage import join

        # Typed before anything else: a bound is a date or a number, never a path fragment of the file names.
        check_window_bound(self.start, self.time_type, "Window start")
        check_window_bound(self.end, self.time_type, "Window end")
        spec = WindowSpec(
            source_uri=self.source_uri,
            time_column=self.time_column,
            start=str(self.start),
            end=str(self.end),
            key_column=self.key_column,
            holdout_fraction=self.holdout_fraction,
            min_rows=self.min_rows,
            time_type=self.time_type,
        )
        run_id = context["run_id"].replace(":", "_").replace("+", "_")
        out_dir = self.output_dir or join(self.source_uri.rsplit("/", 1)[0], "windows", run_id)
        # Both come from Params or XCom: neither the table read nor the files written may leave the root.
        self.check_data_paths(source_uri=self.source_uri, output_dir=join(out_dir, "window"))
        result = cut_window(spec, out_dir, self.storage_hook.storage_for(out_dir), fmt=self.fmt,
                            source_storage=self.storage_hook.storage_for(spec.source_uri))
        self.log.info(
            "Window %s..%s: %d rows (%d train, %d holdout) -> %s",
            result.start, result.end, result.rows, result.train_rows, result.holdout_rows, result.train_uri,
        )
        return result.to_dict()
