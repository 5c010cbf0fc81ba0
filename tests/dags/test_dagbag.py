"""The reference DAGs import cleanly, fast, and without heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
HEAVY = ("torch", "mlflow", "great_expectations", "evidently", "sklearn", "pandas")
EXPECTED_DAGS = {"train_pipeline", "batch_inference", "model_rollback"}


def test_dagbag_has_no_import_errors():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    assert bag.import_errors == {}
    assert EXPECTED_DAGS <= set(bag.dag_ids)
    for dag_id in bag.dag_ids:
        dag = bag.dags[dag_id]
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md, f"{dag_id} has no documentation"


def test_every_param_of_every_form_is_described_and_typed():
    """The trigger forms: a title and a description for each field, dates as dates, choices as enums."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS))
    for dag_id, dag in bag.dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            schema = param.schema
            assert schema.get("title") and param.description, f"{dag_id}.{name} is not described"
            kinds = schema.get("type")
            kinds = kinds if isinstance(kinds, list) else [kinds]
            if "window" in name or name.startswith("reference_"):
                assert "number" in kinds or schema.get("format") == "date", f"{dag_id}.{name} is free text"
    rollback = bag.dags["model_rollback"].params.get_param("to_version").schema
    assert "integer" in rollback["type"]
    assert None not in bag.dags["continual_learning"].params.get_param("action").schema.get("enum")


def test_the_trigger_form_refuses_an_untyped_window_or_a_path():
    """Airflow checks the Params' format at trigger time: a path or an impossible date never reaches a task."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.definitions.param import ParamValidationError

    bag = DagBag(dag_folder=str(DAGS))
    checked = 0
    for dag_id, dag in bag.dags.items():
        for name in dag.params:
            if "window" not in name and not name.startswith("reference_"):
                continue
            param = dag.params.get_param(name)
            for bad in ("../../cl_escape", "2024-13-01", "2024-01-31/../../x"):
                with pytest.raises(ParamValidationError):
                    param.resolve(bad)
            good = 3 if "number" in str(param.schema.get("type")) else "2024-01-31"
            assert param.resolve(good) == good, f"{dag_id}.{name}"
            checked += 1
    assert checked >= 8


def test_the_approval_branch_follows_the_require_approval_param():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(DAGS / "train_pipeline.py")).dags["train_pipeline"]
    choose = dag.get_task("approval_path").python_callable
    assert choose(params={"require_approval": True}) == "approve_production"
    assert choose(params={"require_approval": False}) == "promote_production"
    assert "approval_path" not in DagBag(dag_folder=str(DAGS / "continual_learning.py")).dags[
        "continual_learning"].task_ids, "continual learning promotes without a person"


_PROBE = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("probe_dag", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {heavy})))
"""


@pytest.mark.parametrize("dag_file", sorted(p.name for p in DAGS.glob("*.py")))
def test_dag_file_imports_no_heavy_library(dag_file):
    """A DAG file is parsed every 30 s by the dag processor: torch & co. must not load at parse time."""
    code = _PROBE.format(heavy=set(HEAVY))
    out = subprocess.run([sys.executable, "-c", code, str(DAGS / dag_file)], capture_output=True, text=True,
                         check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == [], f"{dag_file} imports heavy modules at parse time: {loaded[:10]}"


def test_plugin_imports_no_heavy_library():
    code = (
        "import sys, json; import mlops_plugin, airflow_mlops.plugin, airflow_mlops.operators.registry, "
        "airflow_mlops.operators.data, airflow_mlops.operators.tracking; "
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO / "plugins")
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_probe_detects_a_heavy_import(tmp_path):
    """The check above would catch a DAG that imports torch."""
    bad = tmp_path / "bad_dag.py"
    bad.write_text("import torch\n")
    code = _PROBE.format(heavy=set(HEAVY))
    out = subprocess.run([sys.executable, "-c", code, str(bad)], capture_output=True, text=True, check=True)
    assert "torch" in json.loads(out.stdout.strip().splitlines()[-1])


def test_plugin_registers_once_without_import_errors():
    code = (
        "from airflow.plugins_manager import _get_plugins; import json; p, e = _get_plugins(); "
        "print(json.dumps({'names': [x.name for x in p], 'errors': e}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["names"].count("airflow_mlops") == 1
