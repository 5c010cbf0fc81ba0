"""The production topology for end-to-end tests: one per session, started natively as `make up-prod` does."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlops_testkit.airflow_api import AirflowApi

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "topology"


def _load_topology_module():
    spec = importlib.util.spec_from_file_location("mlops_topology", REPO / "include" / "scripts" / "topology.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


topology = _load_topology_module()

MISSING = [what for what, ok in (
    ("PostgreSQL 15 (apt-get install postgresql)", (topology.PG_BIN / "initdb").exists()),
    ("redis-server (apt-get install redis-server)", shutil.which("redis-server") is not None),
    ("the Celery provider (pip install -r docker/requirements-deploy.txt)",
     importlib.util.find_spec("airflow.providers.celery") is not None),
) if not ok]

#: Shorter waits than production: a killed worker's task is failed after 30 s without heartbeat, retried after 5.
TEST_SETTINGS = {
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
    "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
}


def pytest_collection_modifyitems(items):
    for item in items:
        if "topology" in item.keywords and MISSING:
            item.add_marker(pytest.mark.skip(reason=f"the production topology needs {', '.join(MISSING)}"))


@dataclass
class Prod:
    """The running topology and clients of its services."""

    topo: object
    api: AirflowApi

    @property
    def values(self) -> dict[str, str]:
        return self.topo.values  # type: ignore[attr-defined]

    def s3(self):
        import boto3

        v = self.values
        return boto3.session.Session().client("s3", endpoint_url=self.topo.s3_url,  # type: ignore[attr-defined]
                                              aws_access_key_id=v["S3_ACCESS_KEY"],
                                              aws_secret_access_key=v["S3_SECRET_KEY"], region_name="us-east-1")

    def s3_env(self) -> dict[str, str]:
        """S3 as the tasks reach it, and MLflow's basic-auth admin for this process's MLflow clients."""
        v = self.values
        return {"AWS_ENDPOINT_URL": self.topo.s3_url, "AWS_ACCESS_KEY_ID": v["S3_ACCESS_KEY"],  # type: ignore[attr-defined]
                "AWS_SECRET_ACCESS_KEY": v["S3_SECRET_KEY"], "AWS_DEFAULT_REGION": "us-east-1",
                "MLFLOW_TRACKING_USERNAME": v["MLFLOW_ADMIN_USER"], "MLFLOW_TRACKING_PASSWORD": v["MLFLOW_ADMIN_PASSWORD"]}

    def mlflow(self):
        """A client of the topology's MLflow server (signed in through ``prod_env``'s environment)."""
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.topo.mlflow_url)  # type: ignore[attr-defined]

    @property
    def workers(self) -> list[str]:
        return self.topo.cfg.worker_names()  # type: ignore[attr-defined]

    def data_dir(self) -> str:
        return f"s3://{self.values['DATA_BUCKET']}/data"


@pytest.fixture(scope="module")
def prod(tmp_path_factory):
    """
    PostgreSQL, Redis, S3, MLflow server and Airflow with CeleryExecutor and two workers, on loopback: one
    topology for the module's tests, stopped after them so the rest of the suite has the cores back.
    """
    home = tmp_path_factory.mktemp("topology")
    topo = topology.Topology(topology.TopologyConfig(home=home, workers=2, extra_env=TEST_SETTINGS))
    topo.up(timeout=600)
    try:
        api = AirflowApi(url=topo.api_url, password=topo.admin_password(),
                         log_homes=[topo.cfg.worker_home(w) for w in topo.cfg.worker_names()])
        api.login()
        yield Prod(topo=topo, api=api)
    finally:
        leaders = [int(p["pid"]) for n, p in topo.processes.items() if n != "postgres"]
        tree = {pid for leader in leaders for pid in [leader, *topology.stack._descendants(leader)]}
        topo.destroy()
        left = topology.stack._running(sorted(tree))
        assert not left, f"processes left after stopping the topology: {left}"


@pytest.fixture(scope="module")
def prod_env(prod):
    """This process reads the topology's S3 as its tasks do (checkpoints, policy state)."""
    saved = {k: os.environ.get(k) for k in prod.s3_env()}
    os.environ.update(prod.s3_env())
    try:
        yield prod
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
