"""docker/compose.yaml and the native topology (include/scripts/topology.py) are one definition."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE_BIN = shutil.which("docker-compose")


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


topology = _load("mlops_topology_definition", REPO / "include" / "scripts" / "topology.py")


def _env_values() -> dict[str, str]:
    """docker/.env.example as an operator scaling out would set it: CeleryExecutor."""
    values = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    values["AIRFLOW_EXECUTOR"] = "CeleryExecutor"
    return values


@pytest.fixture(scope="module")
def compose(tmp_path_factory) -> dict[str, dict]:
    """Every service of compose's celery profile as docker-compose resolves it (by YAML alone without it)."""
    values = _env_values()
    if COMPOSE_BIN:
        env_file = tmp_path_factory.mktemp("compose") / "celery.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        proc = subprocess.run([COMPOSE_BIN, "-f", str(DOCKER / "compose.yaml"), "--env-file", str(env_file),
                               "--profile", "celery", "config"], capture_output=True, text=True, cwd=DOCKER,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
    else:
        text = re.sub(r"(?<!\$)\$\{(\w+)(?::?([-?])([^}]*))?\}",
                      lambda m: values.get(m.group(1)) or (m.group(3) if m.group(2) == "-" else ""),
                      (DOCKER / "compose.yaml").read_text())
    # Compose writes a literal $ as $$; the definition holds the text the shell or program receives.
    text = text.replace("$$", "$")
    return yaml.safe_load(text)["services"]


@pytest.fixture(scope="module")
def definition() -> dict:
    return topology.definition(_env_values())


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def test_the_same_services(compose, definition):
    assert set(compose) == set(definition)
    assert set(definition) == {*topology.INFRA_SERVICES, *topology.APP_SERVICES}


@pytest.mark.parametrize("name", topology.APP_SERVICES)
def test_the_same_command(compose, definition, name):
    assert compose[name]["command"] == definition[name].command


@pytest.mark.parametrize("name", topology.APP_SERVICES)
def test_the_same_entrypoint(compose, definition, name):
    assert compose[name].get("entrypoint") == definition[name].entrypoint


@pytest.mark.parametrize("name", [*topology.APP_SERVICES, "postgres", "s3", "redis"])
def test_the_same_environment(compose, definition, name):
    got, want = _env(compose[name]), definition[name].environment
    assert sorted(set(got) - set(want)) == [], "in compose only"
    assert sorted(set(want) - set(got)) == [], "in the native topology only"
    assert {k: v for k, v in got.items() if v != want[k]} == {}


@pytest.mark.parametrize("name", [n for n in topology.APP_SERVICES])
def test_the_same_connections(compose, definition, name):
    """Services wait for the same others: the native launcher starts them in the order compose does."""
    assert set(compose[name].get("depends_on") or {}) == set(definition[name].depends_on)


def test_native_topology_adds_only_what_the_image_and_one_host_need(tmp_path):
    cfg = topology.TopologyConfig(home=tmp_path, workers=2, ports={
        "postgres": 15432, "redis": 16379, "s3": 19000, "mlflow": 15000, "api": 18080, "trigger_logs": 18794,
        "worker-1_logs": 18793, "worker-2_logs": 18795})
    cfg.home.mkdir(exist_ok=True)
    values = topology._settings(cfg)
    native = topology.definition(values, topology.native_addresses(cfg))
    for name in ("airflow-scheduler", "airflow-worker"):
        worker = "worker-2" if name == "airflow-worker" else None
        env = topology.native_environment(cfg, native[name], worker)
        defined = native[name].environment
        assert {k: env[k] for k in defined} == defined
        assert "@127.0.0.1:15432/airflow" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
        assert env["MLOPS_DATA_DIR"].startswith("s3://")
        assert {"AIRFLOW_HOME", "AIRFLOW_CONFIG", "AIRFLOW__CORE__DAGS_FOLDER"} <= set(env)
        assert set(env) - set(defined) - set(__import__("os").environ) <= topology.NATIVE_ONLY_ENV | {"PYTHONPATH"}
    worker_env = topology.native_environment(cfg, native["airflow-worker"], "worker-2")
    assert worker_env["AIRFLOW_HOME"] == str(tmp_path / "worker-2")
    assert worker_env["MLOPS_NODE_NAME"] == "worker-2"
    cmd = topology.native_command(cfg, native["airflow-worker"], "worker-2")
    assert cmd[1:] == [*native["airflow-worker"].command[1:], "--celery-hostname", "worker-2@%h"]
    # The same secrets natively: the broker's password, MLflow's basic auth with its users in the topology's home.
    assert env["AIRFLOW__CELERY__BROKER_URL"] == f"redis://:{values['REDIS_PASSWORD']}@127.0.0.1:16379/0"
    mlflow_env = topology.mlflow_native_environment(cfg, native["mlflow"])
    assert "--app-name=basic-auth" in native["mlflow"].command
    ini = Path(mlflow_env["MLFLOW_AUTH_CONFIG_PATH"])
    assert ini.parent == tmp_path / "mlflow"
    assert f"database_uri = sqlite:///{tmp_path}/mlflow/basic_auth.db" in ini.read_text()
    assert mlflow_env["MLFLOW_AUTH_ADMIN_PASSWORD"] == values["MLFLOW_ADMIN_PASSWORD"]
    # Secrets are generated once per topology, kept private and pass the preflight check.
    check = topology.native_environment(cfg, native["preflight"])
    proc = subprocess.run(topology.native_command(cfg, native["preflight"]), env=check, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert topology._settings(cfg) == values
    assert (tmp_path / "settings.json").stat().st_mode & 0o077 == 0


def test_image_sets_what_the_native_topology_sets_for_it():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for key in ("AIRFLOW_HOME", "AIRFLOW_CONFIG", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER",
                "GIT_PYTHON_REFRESH", "PYTHONUNBUFFERED"):
        assert re.search(rf"^\s*(ENV )?{key}=", dockerfile, flags=re.M), key


def test_missing_secret_is_refused():
    values = _env_values()
    del values["MLFLOW_DB_PASSWORD"]
    with pytest.raises(ValueError, match="MLFLOW_DB_PASSWORD"):
        topology.definition(values)
