"""The real stack for end-to-end tests: `airflow standalone` on loopback (as `make up` starts it) and MLflow."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlops_testkit.servers import free_port

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
TERMINAL = {"success", "failed"}


def _load_stack_module():
    spec = importlib.util.spec_from_file_location("mlops_stack", REPO / "include" / "scripts" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


stack = _load_stack_module()


@dataclass
class AirflowApi:
    """The Airflow REST API (v2) as a logged-in admin, plus what the tests need to wait for."""

    url: str
    password: str
    mlflow_url: str
    home: Path
    token: str = ""

    def login(self) -> str:
        import requests

        resp = requests.post(f"{self.url}/auth/token", json={"username": "admin", "password": self.password},
                             timeout=30)
        resp.raise_for_status()
        self.token = resp.json()["access_token"]
        return self.token

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        import requests

        headers = {"Authorization": f"Bearer {self.token or self.login()}"}
        resp = requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        if resp.status_code == 401:  # token expired during a long wait
            headers["Authorization"] = f"Bearer {self.login()}"
            resp = requests.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 300) -> dict:
        """Until the dag processor has parsed the file and the API knows the DAG."""
        import requests

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                return self.request("GET", f"/api/v2/dags/{dag_id}")
            except requests.HTTPError:
                time.sleep(3)
        errors = self.request("GET", "/api/v2/importErrors")
        raise AssertionError(f"{dag_id} not parsed after {timeout}s; import errors: {errors}")

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": True})

    def settle(self, dag_ids: tuple[str, ...], timeout: float = 900, quiet_s: float = 10) -> None:
        """Wait until none of ``dag_ids`` has a queued or running run (and none starts for ``quiet_s``)."""
        deadline = time.monotonic() + timeout
        quiet_since = None
        while time.monotonic() < deadline:
            busy = [r["dag_run_id"] for d in dag_ids for r in self.runs(d) if r["state"] in ("queued", "running")]
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= quiet_s:
                return
            time.sleep(3)
        raise AssertionError(f"runs of {dag_ids} still active after {timeout}s")

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        run = self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"order_by": "-run_after"})["dag_runs"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL:
                return run
            time.sleep(3)
        raise AssertionError(f"{dag_id} {run_id} not finished after {timeout}s:\n{self.explain(dag_id, run_id)}")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def explain(self, dag_id: str, run_id: str) -> str:
        """Task states and the log tails of the run's tasks, for an assertion message."""
        states = self.task_states(dag_id, run_id)
        lines = [json.dumps(states, indent=1)]
        for task_id, state in states.items():
            if state not in ("success", "skipped"):
                for log in sorted((self.home / "logs").glob(f"dag_id={dag_id}/run_id={run_id}/task_id={task_id}/*")):
                    lines.append(f"--- {log.name} of {task_id} ({state})\n{log.read_text(errors='replace')[-2500:]}")
        return "\n".join(lines)

    def run_and_wait(self, dag_id: str, conf: dict[str, Any], timeout: float = 900) -> tuple[str, dict]:
        run_id = self.trigger(dag_id, conf)
        run = self.wait_for_run(dag_id, run_id, timeout)
        assert run["state"] == "success", self.explain(dag_id, run_id)
        return run_id, run


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
                         mlflow_url=e2e_mlflow.url, home=home)
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
