"""The real stack for end-to-end tests: `airflow standalone` on loopback (as `make up` starts it) and MLflow."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_testkit.airflow_api import AirflowApi as TestkitApi
from mlops_testkit.servers import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"


def _load_stack_module():
    spec = importlib.util.spec_from_file_location("mlops_stack", REPO / "include" / "scripts" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


stack = _load_stack_module()


@dataclass
class AirflowApi(TestkitApi):
    """The shared REST client, plus the MLflow server the stack's extra links point at."""

    mlflow_url: str = ""


@pytest.fixture(scope="session")
def airflow_stack(tmp_path_factory, e2e_mlflow, rainfall_source):
    """`airflow standalone` (scheduler, dag processor, API server, triggerer) on free loopback ports."""
    home = tmp_path_factory.mktemp("e2e-airflow-home")
    cfg = stack.StackConfig(
        airflow_home=home,
        airflow_port=free_port(),
        mlflow_dir=None,  # the tests' real `mlflow server` (e2e_mlflow) is the tracking server and UI
        mlflow_ui_url=e2e_mlflow.url,
        extra_env={
            # Two cores: keep the executor small and parse new files quickly.
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        },
    )
    state = stack.up(cfg, timeout=420)
    pids = [int(p["pid"]) for p in state["processes"]]
    try:
        api = AirflowApi(url=cfg.airflow_url, password=json.loads(cfg.password_file.read_text())["admin"],
                         log_homes=[home], mlflow_url=e2e_mlflow.url)
        api.login()
        yield api
    finally:
        descendants = {p for pid in pids for p in stack._descendants(pid)}
        stack.down(cfg, grace=30)
        left = stack._running(sorted(descendants | set(pids)))
        assert not left, f"processes left after stopping the stack: {left}"


@pytest.fixture(scope="session")
def champion(airflow_stack, mlflow_client):
    """A champion of the reference model: the one a test before made, else trained here, so each test runs alone."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_model_version_by_alias("rainfall", "champion")
    except MlflowException:
        pass
    airflow_stack.wait_for_dag("train_pipeline")
    airflow_stack.unpause("train_pipeline")
    airflow_stack.run_and_wait("train_pipeline", {"window_start": "1950-01-01", "window_end": "1952-12-31",
                                                  "epochs": 1, "processes": 2, "batch_size": 128, "min_auc": 0.5})
    return mlflow_client.get_model_version_by_alias("rainfall", "champion")


@pytest.fixture(scope="session")
def monitored_window(airflow_stack, mlflow_client, champion, tmp_path_factory) -> None:
    """At least one window checked by drift_monitor (what the drift tests did, else one run here)."""
    def monitored() -> bool:
        experiment = mlflow_client.get_experiment_by_name("rainfall-monitoring")
        return experiment is not None and bool(mlflow_client.search_runs([experiment.experiment_id], max_results=1))

    if monitored():
        return
    api = airflow_stack
    api.wait_for_dag("drift_monitor")
    api.unpause("drift_monitor")  # its scheduled run checks a window too
    api.settle(("drift_monitor", "continual_learning"))
    if monitored():
        return
    # Under the data folder: the policy operator refuses a state file outside its allowed root.
    state = Path(os.environ["MLOPS_DATA_DIR"]) / "drift" / f"e2e_state_{tmp_path_factory.mktemp('monitor').name}.json"
    api.run_and_wait("drift_monitor", {"window_start": "1983-01-01", "window_end": "1983-03-31",
                                       "state_uri": str(state)})


@pytest.fixture(scope="session")
def mlflow_client(e2e_mlflow):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=e2e_mlflow.url)


@pytest.fixture(scope="session")
def e2e_mlflow(tmp_path_factory):
    """The end-to-end tests' own `mlflow server`: their champion starts from nothing, whatever ran before."""
    from mlops_testkit.servers import serving_mlflow

    with serving_mlflow(tmp_path_factory.mktemp("e2e-mlflow")) as srv:
        yield srv


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_collection_modifyitems(items):
    # The scheduler test trains the first champion; the browser test then adds a version on top of it.
    order = {"test_scheduler.py": 0, "test_browser.py": 1}
    items.sort(key=lambda i: order.get(os.path.basename(str(i.fspath)), -1) if "e2e" in str(i.fspath) else -2)
