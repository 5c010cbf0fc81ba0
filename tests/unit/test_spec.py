"""The declared model spec and pipeline files: validation, gate defaults per task, path expansion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.spec import ModelSpec, load_pipeline

REPO = Path(__file__).resolve().parents[2]


def _spec(**kw):
    base = {"name": "m", "task": "binary", "features": ["a", "b"], "target": "y"}
    return ModelSpec.from_dict({**base, **kw})


@pytest.mark.parametrize(("task", "metric", "mode"), [
    ("binary", "auc", "max"), ("multiclass", "accuracy", "max"), ("regression", "rmse", "min"),
])
def test_the_gate_defaults_to_the_tasks_metric_and_its_direction(task, metric, mode):
    gate = _spec(task=task).gate_policy()
    assert gate["metric"] == metric and gate["mode"] == mode


def test_a_declared_gate_metric_keeps_its_own_direction():
    assert _spec(task="regression", gate={"metric": "r2"}).gate_policy()["mode"] == "max"


@pytest.mark.parametrize(("change", "match"), [
    ({"features": "a,b"}, "non-empty list"),
    ({"features": ["a", "a"]}, "repeats"),
    ({"target": "a"}, "outside the features"),
    ({"task": "ranking"}, "Unknown learning task"),
    ({"time_type": "text"}, "time_type"),
    ({"factory": "no_colon"}, "import path"),
    ({"name": "bad name!"}, "not usable"),
    ({"classes": [0, 1]}, "multiclass"),
    ({"metrics": [42]}, "malformed"),
    ({"colour": "red"}, "Unknown model spec keys"),
])
def test_a_bad_spec_names_the_problem(change, match):
    with pytest.raises(MlopsConfigurationError, match=match):
        _spec(**change)


def test_multiclass_classes_size_the_output():
    spec = _spec(task="multiclass", classes=["a", "b", "c"])
    assert spec.model_kwargs()["out_features"] == 3


def test_assets_are_named_after_the_model():
    spec = _spec(name="churn")
    assert spec.asset_uri("production") == "mlops://models/churn/production"
    assert spec.asset_uri("drift") == "mlops://drift/churn"


def test_pipeline_files_expand_the_project_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLOPS_PROJECT_ROOT", raising=False)
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"source_uri": "${MLOPS_DATA_DIR}/t.parquet",
                                "suite_path": "${MLOPS_INCLUDE_DIR}/s.json",
                                "model": {"name": "m", "task": "regression", "features": ["x"], "target": "y",
                                          "pythonpath": ["${MLOPS_INCLUDE_DIR}"]}}))
    pipeline = load_pipeline(path, project_root=tmp_path)
    assert pipeline.source_uri == f"{tmp_path}/data/t.parquet"
    assert pipeline.suite_path == f"{tmp_path}/include/s.json"
    assert pipeline.data_root == str(tmp_path / "data")
    assert pipeline.model.pythonpath == [f"{tmp_path}/include"]


@pytest.mark.parametrize("name", ["rainfall", "digits", "diabetes"])
def test_the_reference_pipelines_load(name):
    pipeline = load_pipeline(REPO / "include" / "pipelines" / f"{name}.json", REPO)
    assert pipeline.model.name == name
    assert Path(pipeline.suite_path).is_file()


def test_a_broken_pipeline_file_is_named(tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text("{not json")
    with pytest.raises(MlopsConfigurationError, match="Cannot read the pipeline file"):
        load_pipeline(bad)
