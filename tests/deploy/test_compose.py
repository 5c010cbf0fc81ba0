"""docker/compose.yaml as docker-compose resolves it (``docker-compose config``, no engine needed) and the image."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
CORE = {"postgres", "s3", "s3-init", "mlflow", "airflow-init", *AIRFLOW_SERVICES}
COMPOSE_BIN = shutil.which("docker-compose")


def _env_file() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def _config(*options: str, env_file: Path | None = ENV_EXAMPLE, args: tuple[str, ...] = ()
            ) -> subprocess.CompletedProcess:
    cmd = [COMPOSE_BIN, "-f", str(COMPOSE)]
    if env_file:
        cmd += ["--env-file", str(env_file)]
    return subprocess.run([*cmd, *options, "config", *args], capture_output=True, text=True, cwd=DOCKER,
                          timeout=120)


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose model after interpolation and merges: by docker-compose if installed, else by YAML alone."""
    if COMPOSE_BIN:
        proc = _config()
        assert proc.returncode == 0, proc.stderr
        return yaml.safe_load(proc.stdout)
    text = COMPOSE.read_text()
    env = _env_file()
    text = re.sub(r"\$\{(\w+)(?::?[-?][^}]*)?\}", lambda m: env.get(m.group(1), ""), text)
    return yaml.safe_load(text)


@pytest.mark.skipif(COMPOSE_BIN is None, reason="docker-compose is not installed (.ci/run installs it)")
def test_compose_config_is_valid_with_the_example_env():
    proc = _config()
    assert proc.returncode == 0, proc.stderr
    model = yaml.safe_load(proc.stdout)["services"]
    # Without a profile only the core starts; the rest belongs to the "celery" scale-out profile.
    assert {n for n, s in model.items() if not s.get("profiles")} == CORE
    assert {n for n, s in model.items() if s.get("profiles")} == {"redis", "airflow-worker"}


@pytest.mark.skipif(COMPOSE_BIN is None, reason="docker-compose is not installed (.ci/run installs it)")
def test_compose_refuses_to_start_without_secrets(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("")
    proc = _config(env_file=empty)
    assert proc.returncode != 0
    assert "in docker/.env" in proc.stderr


@pytest.mark.skipif(COMPOSE_BIN is None, reason="docker-compose is not installed (.ci/run installs it)")
def test_celery_profile_adds_broker_and_workers():
    proc = _config("--profile", "celery")
    assert proc.returncode == 0, proc.stderr
    services = yaml.safe_load(proc.stdout)["services"]
    worker = services["airflow-worker"]
    assert worker["command"] == ["airflow", "celery", "worker"]
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["environment"]["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert worker["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] == \
        services["airflow-scheduler"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_services_and_dependencies(resolved):
    services = resolved["services"]
    assert CORE <= set(services)
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["mlflow"]["condition"] == "service_healthy"
        assert deps["airflow-init"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in services[name]
    assert services["mlflow"]["depends_on"]["s3-init"]["condition"] == "service_completed_successfully"


def test_mlflow_server_uses_postgres_backend_and_s3_artifacts(resolved):
    mlflow = resolved["services"]["mlflow"]
    cmd = " ".join(mlflow["command"])
    assert "--artifacts-destination=s3://mlflow/" in cmd and "--serve-artifacts" in cmd
    assert "password" not in cmd and "postgresql" not in cmd  # the backend URI comes from the environment
    env = mlflow["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql+psycopg2://mlflow:")
    assert env["MLFLOW_BACKEND_STORE_URI"].endswith("@postgres:5432/mlflow")
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://s3:9000"
    # Least privilege: the MLflow server holds none of Airflow's secrets.
    assert not any(key.startswith("AIRFLOW") for key in env), sorted(env)


def test_airflow_components_agree_on_database_secrets_and_api_address(resolved):
    envs = [resolved["services"][s]["environment"] for s in AIRFLOW_SERVICES]
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW_CONN_MLFLOW_DEFAULT"):
        values = {env[key] for env in envs}
        assert len(values) == 1, f"{key} differs between Airflow services: {values}"
    env = envs[0]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert '"host": "http://mlflow:5000"' in env["AIRFLOW_CONN_MLFLOW_DEFAULT"]


def test_published_ports_are_on_loopback_only(resolved):
    for name, service in resolved["services"].items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name} publishes {port} on every interface"


def test_example_env_holds_no_real_secret():
    env = _env_file()
    for key in ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY",
                "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"):
        assert env[key].startswith("change-me"), key


def test_dockerfile_copies_what_exists_and_pins_dependencies():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for src in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", dockerfile, flags=re.M):
        for path in src.split():
            assert (REPO / path).exists(), f"Dockerfile copies {path}, which does not exist"
    assert "-c constraints.txt" in dockerfile
    constraints = {line.split("==")[0].lower() for line in (REPO / "constraints.txt").read_text().splitlines()
                   if "==" in line and not line.startswith("#")}
    for line in (DOCKER / "requirements-deploy.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert "==" in line, f"unpinned: {line}"
            assert re.sub(r"\[.*\]", "", line.split("==")[0]).lower() in constraints, line
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text()
    for needed in ("plugins/", "dags/", "include/", "constraints.txt"):
        assert f"!{needed}" in ignore
