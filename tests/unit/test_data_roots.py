"""Paths and window bounds from Params, XCom or a drift event: refused before any read or write when they escape."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.operators.data import PrepareWindowOperator
from airflow_mlops.validation import PathOutsideRootError

CONTEXT = {"run_id": "manual__1"}


@pytest.fixture
def data_dir(tmp_path, monkeypatch) -> Path:
    """The data folder (env MLOPS_DATA_DIR) with a source table; ``tmp_path/outside`` holds a copy out of it."""
    data = tmp_path / "data"
    (tmp_path / "outside").mkdir()
    data.mkdir()
    monkeypatch.setenv("MLOPS_DATA_DIR", str(data))
    df = pd.DataFrame({"row_id": range(100), "batch": [i // 10 + 1 for i in range(100)],
                       "day": pd.date_range("2024-01-01", periods=100, freq="D").strftime("%Y-%m-%d"),
                       "x": [float(i) for i in range(100)], "y": [i % 2 for i in range(100)]})
    df.to_csv(data / "source.csv", index=False)
    df.to_csv(tmp_path / "outside" / "source.csv", index=False)
    return data


def _files(root: Path) -> set[str]:
    return {os.path.join(d, f) for d, _, names in os.walk(root) for f in names}


def _window(source: str, start, end, **kwargs) -> PrepareWindowOperator:
    return PrepareWindowOperator(task_id="w", source_uri=source, time_column=kwargs.pop("time_column", "batch"),
                                 start=start, end=end, min_rows=1, **kwargs)


def test_the_default_root_is_the_data_folder(data_dir, tmp_path):
    out = _window(str(data_dir / "source.csv"), 2, 3).execute(CONTEXT)
    assert Path(out["train_uri"]).parent == data_dir / "windows" / "manual__1" and out["rows"] == 20
    before = _files(tmp_path)
    with pytest.raises(PathOutsideRootError, match="outside the allowed root.*MLOPS_DATA_DIR"):
        _window(str(tmp_path / "outside" / "source.csv"), 2, 3).execute(CONTEXT)
    assert _files(tmp_path) == before  # no window written beside the outside table
    opted_out = _window(str(tmp_path / "outside" / "source.csv"), 2, 3, allowed_root="/").execute(CONTEXT)
    assert opted_out["rows"] == 20


@pytest.mark.parametrize("source", ["{data}/../outside/source.csv", "{data}/link.csv", "s3://bucket/source.csv"])
def test_a_source_that_escapes_is_refused_before_it_is_read(data_dir, tmp_path, source):
    (data_dir / "link.csv").symlink_to(tmp_path / "outside" / "source.csv")
    before = _files(tmp_path)
    with pytest.raises(PathOutsideRootError, match="source_uri"):
        _window(source.format(data=data_dir), 2, 3).execute(CONTEXT)
    assert _files(tmp_path) == before


def test_an_output_folder_outside_the_root_is_refused(data_dir, tmp_path):
    before = _files(tmp_path)
    with pytest.raises(PathOutsideRootError, match="output_dir"):
        _window(str(data_dir / "source.csv"), 2, 3, output_dir=str(tmp_path / "outside" / "w")).execute(CONTEXT)
    assert _files(tmp_path) == before


@pytest.mark.parametrize(("time_column", "time_type", "start", "end", "expected"), [
    ("batch", "auto", "2", "../../cl_escape", "number or a date"),
    ("batch", "numeric", "2", "2024-01-31", "not a number"),
    ("day", "date", "2024-01-01", "2024-13-01", "not a date"),
    ("day", "date", "2024-01-01", "2024-01-31/../../../cl_escape", "not a date"),
    ("day", "auto", "../x", "2024-01-31", "Window start"),
])
def test_an_untyped_bound_is_refused_with_nothing_written(data_dir, tmp_path, time_column, time_type, start, end,
                                                          expected):
    before = _files(tmp_path)
    op = _window(str(data_dir / "source.csv"), start, end, time_column=time_column, time_type=time_type)
    with pytest.raises(MlopsConfigurationError, match=expected) as err:
        op.execute(CONTEXT)
    assert "Expected:" in str(err.value) and "Hint:" in str(err.value)
    assert _files(tmp_path) == before
    assert not list(tmp_path.rglob("*cl_escape*"))


def test_typed_date_bounds_cut_the_window(data_dir):
    out = _window(str(data_dir / "source.csv"), "2024-01-05", "2024-01-14", time_column="day",
                  time_type="date").execute(CONTEXT)
    assert out["rows"] == 10 and Path(out["train_uri"]).name == "train_2024-01-05_2024-01-14.csv"


def test_batch_inference_refuses_an_output_outside_the_root(data_dir, tmp_path):
    from airflow_mlops.operators.inference import BatchInferenceOperator

    target = tmp_path / "outside" / "predictions.csv"
    op = BatchInferenceOperator(task_id="score", model_name="m", input_uri=str(data_dir / "source.csv"),
                                output_uri=str(target))
    with pytest.raises(PathOutsideRootError, match="output_uri"):
        op.execute({})  # refused before the registry is asked or the input read
    assert not target.exists()
    op = BatchInferenceOperator(task_id="score", model_name="m", input_uri=str(tmp_path / "outside" / "source.csv"),
                                output_uri=str(data_dir / "p.csv"))
    with pytest.raises(PathOutsideRootError, match="input_uri"):
        op.execute({})
    assert not (data_dir / "p.csv").exists()


def test_monitors_and_evaluation_refuse_a_table_outside_the_root(data_dir, tmp_path):
    from airflow_mlops.operators.drift import DriftDetectionOperator, PerformanceMonitorOperator
    from airflow_mlops.operators.registry import EvaluateModelOperator, RegisterModelOperator

    outside, inside = str(tmp_path / "outside" / "source.csv"), str(data_dir / "source.csv")
    cache = data_dir / "profile.json"
    drift = DriftDetectionOperator(task_id="d", reference_uri=outside, current_uri=inside, feature_columns=["x"],
                                   drift_config={"mode": "profile"}, profile_uri=str(cache))
    with pytest.raises(PathOutsideRootError, match="reference_uri"):
        drift.execute({})
    assert not cache.exists()
    escaping_cache = DriftDetectionOperator(task_id="d", reference_uri=inside, current_uri=inside,
                                            feature_columns=["x"], profile_uri=str(tmp_path / "outside" / "p.json"))
    with pytest.raises(PathOutsideRootError, match="profile_uri"):
        escaping_cache.execute({})
    performance = PerformanceMonitorOperator(task_id="p", labelled_uri=f"{data_dir}/../outside/source.csv",
                                             model_name="m", feature_columns=["x"], target_column="y")
    with pytest.raises(PathOutsideRootError, match="labelled_uri"):
        performance.execute({})  # before the registry is asked for the champion
    evaluate = EvaluateModelOperator(task_id="e", checkpoint_uri=str(data_dir / "ckpt"), eval_uri=outside,
                                     feature_columns=["x"], target_column="y", model_name="m")
    with pytest.raises(PathOutsideRootError, match="eval_uri"):
        evaluate.execute({})
    register = RegisterModelOperator(task_id="r", model_name="m", checkpoint_uri=str(data_dir / "ckpt"),
                                     mlflow_run_id="run", validation={"data_uri": outside}, training={},
                                     feature_columns=["x"])
    with pytest.raises(PathOutsideRootError, match="data_uri"):
        register.execute({})  # the input example is never read from outside
    assert not (tmp_path / "outside" / "p.json").exists()


def _spec():
    from airflow_mlops.spec import ModelSpec

    return ModelSpec.from_dict({"name": "m", "task": "binary", "features": ["x"], "target": "y",
                                "time_column": "day", "time_type": "date", "key_column": "row_id"})


@pytest.mark.parametrize(("params", "extra", "expected"), [
    ({}, {"action": "retrain", "window_start": "2024-01-01", "window_end": "../../escape"}, "Window end"),
    ({}, {"action": "retrain", "window_start": "2024-01-01", "window_end": "2024-01-31/../../escape"}, "not a date"),
    ({"window_start": "2024-02-30"}, {"action": "retrain", "window_end": "2024-03-01"}, "Window start"),
])
def test_the_drift_events_window_is_typed_before_anything_runs(data_dir, tmp_path, params, extra, expected):
    from airflow_mlops.continual import resolve_request

    before = _files(tmp_path)
    with pytest.raises(MlopsConfigurationError, match=expected):
        resolve_request(_spec(), str(data_dir / "source.csv"), params, extra)  # before the registry is asked
    assert _files(tmp_path) == before and not list(tmp_path.rglob("*escape*"))


def test_the_drift_events_source_must_lie_under_the_data_folder(data_dir, tmp_path):
    from airflow_mlops.continual import resolve_request

    extra = {"action": "retrain", "window_start": "2024-01-01", "window_end": "2024-01-31",
             "source_uri": str(tmp_path / "outside" / "source.csv")}
    with pytest.raises(PathOutsideRootError, match="source_uri"):
        resolve_request(_spec(), str(data_dir / "source.csv"), {}, extra)
    with pytest.raises(PathOutsideRootError, match="source_uri"):
        resolve_request(_spec(), str(data_dir / "source.csv"), {"source_uri": f"{data_dir}/../outside/source.csv"},
                        {"action": "retrain", "window_start": "2024-01-01", "window_end": "2024-01-31"})


def test_the_plan_reads_and_writes_only_under_the_data_folder(data_dir, tmp_path):
    from airflow_mlops.continual import prepare_fine_tune

    window = _window(str(data_dir / "source.csv"), "2024-03-01", "2024-03-31", time_column="day",
                     time_type="date").execute(CONTEXT)
    plan = prepare_fine_tune(_spec(), window, str(data_dir / "source.csv"), sample_budget=500)
    assert Path(plan["train_uri"]).parent == data_dir / "windows" / "manual__1"
    assert Path(plan["train_uri"]).name.startswith("train_plan_")
    before = _files(tmp_path)
    outside = str(tmp_path / "outside" / "source.csv")
    with pytest.raises(PathOutsideRootError, match="source_uri"):
        prepare_fine_tune(_spec(), window, outside, sample_budget=500)
    moved = {**window, "train_uri": str(tmp_path / "outside" / "train_x.csv")}
    with pytest.raises(PathOutsideRootError, match="train_uri"):
        prepare_fine_tune(_spec(), moved, str(data_dir / "source.csv"), sample_budget=500)
    assert _files(tmp_path) == before


def test_training_refuses_a_table_outside_the_root(data_dir, tmp_path):
    from airflow_mlops.operators.training import DistributedTrainingOperator

    op = DistributedTrainingOperator(task_id="train", train_uri=str(data_dir / "source.csv"),
                                     eval_uri=f"{data_dir}/../outside/source.csv", target_column="y",
                                     feature_columns=["x"], checkpoint_dir=str(tmp_path / "ckpt"))
    with pytest.raises(PathOutsideRootError, match="eval_uri"):
        op.execute({})  # before any worker starts or checkpoint folder is made
    assert not (tmp_path / "ckpt").exists()


def test_every_operator_that_reads_or_writes_data_has_a_templated_root():
    from airflow_mlops.operators.drift import (
        DriftDetectionOperator,
        PerformanceMonitorOperator,
        TriggerPolicyOperator,
    )
    from airflow_mlops.operators.inference import BatchInferenceOperator
    from airflow_mlops.operators.registry import EvaluateModelOperator, RegisterModelOperator
    from airflow_mlops.operators.training import DistributedTrainingOperator
    from airflow_mlops.operators.validation import DataValidationOperator

    for operator in (PrepareWindowOperator, DataValidationOperator, DistributedTrainingOperator,
                     EvaluateModelOperator, RegisterModelOperator, BatchInferenceOperator, DriftDetectionOperator,
                     PerformanceMonitorOperator, TriggerPolicyOperator):
        assert "allowed_root" in operator.template_fields, operator.__name__
