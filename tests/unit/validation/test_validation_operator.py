"""DataValidationOperator: init only assigns, execute calls the service and returns the summary."""

from __future__ import annotations

import pytest

from airflow_mlops.operators.links import DATA_DOCS_URL_KEY, DataDocsLink
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.validation import ExpectationsFailedError, PathOutsideRootError


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.pushed[key] = value


def test_init_only_assigns_templates():
    op = DataValidationOperator(task_id="v", data_path="{{ params.batch }}", suite_path="s.json",
                                mlflow_run_id="{{ ti.xcom_pull('start') }}", quarantine_root="{{ var.q }}")
    assert op.data_path == "{{ params.batch }}" and op.mlflow_run_id.startswith("{{")
    assert set(op.template_fields) >= {"data_path", "suite_path", "mlflow_run_id", "quarantine_root"}
    assert any(isinstance(link, DataDocsLink) for link in op.operator_extra_links)


def test_execute_returns_summary(window, roots, suite_path):
    path = roots["data"] / "w.parquet"
    window.to_parquet(path, index=False)
    ti = FakeTI()
    op = DataValidationOperator(task_id="v", data_path=str(path), suite_path=suite_path,
                                allowed_root=str(roots["data"]))
    summary = op.execute({"ti": ti})
    assert summary["success"] and summary["rows"] == 60 and summary["digest"].startswith("sha256:")
    assert DATA_DOCS_URL_KEY not in ti.pushed


def test_execute_fails_on_bad_batch(window, roots, suite_path):
    bad = window.copy()
    bad["day"] = 1
    path = roots["data"] / "w.csv"
    bad.to_csv(path, index=False)
    op = DataValidationOperator(task_id="v", data_path=str(path), suite_path=suite_path,
                                quarantine_root=str(roots["quarantine"]), allowed_root=str(roots["data"]))
    with pytest.raises(ExpectationsFailedError, match=r"expect_column_values_to_be_unique\(day\)"):
        op.execute({"ti": FakeTI()})
    assert len(list(roots["quarantine"].iterdir())) == 1


def test_execute_refuses_path_outside_root(roots, suite_path, tmp_path):
    op = DataValidationOperator(task_id="v", data_path=str(roots["data"] / ".." / "secret.csv"),
                                suite_path=suite_path, allowed_root=str(roots["data"]))
    with pytest.raises(PathOutsideRootError, match="outside the allowed root"):
        op.execute({"ti": FakeTI()})


def test_the_task_log_keeps_the_packages_lines_not_great_expectations_internals(window, roots, suite_path, caplog):
    """A validation task's log: at most a handful of Great Expectations lines (only its warnings and errors)."""
    import logging

    path = roots["data"] / "w.parquet"
    window.to_parquet(path, index=False)
    op = DataValidationOperator(task_id="v", data_path=str(path), suite_path=suite_path,
                                allowed_root=str(roots["data"]))
    caplog.set_level(logging.DEBUG)
    op.pre_execute({})
    op.execute({"ti": FakeTI()})
    gx_lines = [r for r in caplog.records if r.name.startswith("great_expectations")]
    ours = [r for r in caplog.records if r.name.startswith(("airflow_mlops", "airflow.task"))]
    assert len(gx_lines) <= 5, [r.getMessage()[:80] for r in gx_lines]
    assert ours, "the package's own lines stay"
    logging.getLogger("great_expectations").setLevel(logging.NOTSET)


def test_execute_streams_with_the_engine_parameter(window, roots, suite_path):
    path = roots["data"] / "w.parquet"
    window.to_parquet(path, index=False)
    op = DataValidationOperator(task_id="v", data_path=str(path), suite_path=suite_path, engine="streaming", allowed_root=str(roots["data"]))
    assert op.engine == "streaming"
    streamed = op.execute({"ti": FakeTI()})
    in_memory = DataValidationOperator(task_id="v", data_path=str(path), suite_path=suite_path, allowed_root=str(roots["data"])).execute(
        {"ti": FakeTI()})
    assert streamed["engine"] == "streaming" and in_memory["engine"] == "pandas"
    assert {k: v for k, v in streamed.items() if k != "engine"} == {k: v for k, v in in_memory.items() if k != "engine"}
