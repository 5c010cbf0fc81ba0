"""`make up` / `make down` (include/scripts/stack.py): consistent ports and secrets, and no process left behind."""

from __future__ import annotations

import importlib.util
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack():
    spec = importlib.util.spec_from_file_location("mlops_stack_under_test", REPO / "include" / "scripts" / "stack.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_airflow_env_keeps_ports_and_execution_api_consistent(stack, tmp_path):
    cfg = stack.StackConfig(airflow_home=tmp_path / "home", airflow_port=18123, mlflow_port=15123,
                            mlflow_dir=tmp_path / "mlflow")
    cfg.run_dir.mkdir(parents=True)
    env = stack.airflow_env(cfg)
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO / "dags")
    assert env["MLOPS_MLFLOW_UI_URL"] == "http://127.0.0.1:15123"
    # The same secrets on every start (components of one stack must agree), private to the user.
    again = stack.airflow_env(cfg)
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == again["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert len(env["AIRFLOW__API_AUTH__JWT_SECRET"]) >= 32
    mode = stat.S_IMODE((cfg.run_dir / "secrets.json").stat().st_mode)
    assert mode & 0o077 == 0


@pytest.mark.parametrize("ports", [(0, 5000), (8088, 70000)])
def test_bad_ports_are_refused(stack, tmp_path, ports):
    with pytest.raises(ValueError, match="ports"):
        stack.StackConfig(airflow_home=tmp_path, airflow_port=ports[0], mlflow_port=ports[1])


def test_down_without_a_running_stack(stack, tmp_path):
    assert stack.down(stack.StackConfig(airflow_home=tmp_path)) == []


_TREE = """
import subprocess, sys, time
# A child in a session of its own, as torchrun starts its workers: a process-group kill alone misses it.
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
print(child.pid, flush=True)
time.sleep(300)
"""


def test_stop_processes_reaches_children_in_other_sessions(stack):
    parent = subprocess.Popen([sys.executable, "-c", _TREE], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    child = int(parent.stdout.readline())
    killed = stack.stop_processes([parent.pid], grace=10)
    parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while stack._running([child]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stack._running([parent.pid, child]) == []
    assert killed == []  # SIGTERM was enough: nothing needed SIGKILL
