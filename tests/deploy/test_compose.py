"""docker/compose.yaml as docker-compose resolves it (``docker-compose config``, no engine needed) and the image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops_testkit.deploy_secrets import ENV_EXAMPLE, example_env

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
CORE = {"preflight", "postgres", "s3", "s3-init", "mlflow", "mlflow-init", "airflow-init", *AIRFLOW_SERVICES}
COMPOSE_BIN = shutil.which("docker-compose")


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
    env = example_env()
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
    assert worker["environment"]["AIRFLOW__CELERY__BROKER_URL"] == "redis://:change-me-redis@redis:6379/0"
    assert worker["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] == \
        services["airflow-scheduler"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"]


def test_services_and_dependencies(resolved):
    services = resolved["services"]
    assert CORE <= set(services)
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy"
        assert deps["mlflow"]["condition"] == "service_healthy"
        assert deps["mlflow-init"]["condition"] == "service_completed_successfully"
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
    env = example_env()
    for key in ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "S3_ROOT_USER", "S3_ROOT_PASSWORD",
                "S3_ACCESS_KEY", "S3_SECRET_KEY", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_AIRFLOW_PASSWORD", "MLFLOW_FLASK_SECRET_KEY",
                "REDIS_PASSWORD",
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


# --- secrets and least privilege, on compose as rendered from a docker/.env with generated secrets ---------

@pytest.fixture(scope="module")
def hardened(tmp_path_factory) -> dict:
    """Every service (celery profile included) rendered by docker-compose from good secrets."""
    if not COMPOSE_BIN:
        pytest.skip("docker-compose is not installed (.ci/run installs it)")
    from mlops_testkit.deploy_secrets import good_env

    values = {**example_env(), **good_env(), "AIRFLOW_EXECUTOR": "CeleryExecutor"}
    env_file = tmp_path_factory.mktemp("hardened") / "good.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    proc = _config("--profile", "celery", env_file=env_file)
    assert proc.returncode == 0, proc.stderr
    return {"values": values, "services": yaml.safe_load(proc.stdout)["services"]}


def _flat(service: dict) -> str:
    return yaml.safe_dump({k: service.get(k) for k in ("command", "entrypoint", "environment")})


def test_every_service_starts_after_the_preflight_check_of_the_secrets(hardened):
    services = hardened["services"]
    check = services["preflight"]
    assert check["command"] == ["python", "include/scripts/preflight.py"]
    assert check["restart"] == "no"
    # The third-party services wait for it; every other service waits for one of them.
    for name in ("postgres", "s3", "redis"):
        assert services[name]["depends_on"]["preflight"]["condition"] == "service_completed_successfully", name

    def waits_for_preflight(name: str, seen: frozenset = frozenset()) -> bool:
        deps = services[name].get("depends_on") or {}
        return "preflight" in deps or any(waits_for_preflight(d, seen | {name}) for d in deps if d not in seen)

    assert all(waits_for_preflight(n) for n in services if n != "preflight")


def test_the_preflight_service_refuses_an_unedited_copy_of_the_example(tmp_path):
    """What the preflight container would run on `docker compose up` with docker/.env.example copied as is."""
    proc = _config()  # the example env
    assert proc.returncode == 0, proc.stderr
    service = yaml.safe_load(proc.stdout)["services"]["preflight"]
    run = subprocess.run([sys.executable, *service["command"][1:]], cwd=REPO, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", **{k: str(v) for k, v in service["environment"].items()}},
                         timeout=60)
    assert run.returncode == 1
    assert "AIRFLOW_JWT_SECRET is a publicly known placeholder" in run.stderr
    assert "S3_ROOT_PASSWORD is a publicly known placeholder" in run.stderr


def test_only_the_store_and_its_init_job_hold_the_s3_root_account(hardened):
    root_user, root_password = hardened["values"]["S3_ROOT_USER"], hardened["values"]["S3_ROOT_PASSWORD"]
    holders = {name for name, svc in hardened["services"].items()
               if root_password in _flat(svc) or root_user in _flat(svc)}
    assert holders == {"preflight", "s3", "s3-init"}
    s3_init = hardened["services"]["s3-init"]
    assert s3_init["image"] == hardened["services"]["s3"]["image"]  # MinIO's image, with its mc client
    script = s3_init["command"][0]
    for step in ("mc mb --ignore-existing", "mc admin policy create root mlops-app",
                 "mc admin user add root", "mc admin policy attach root mlops-app"):
        assert step in script
    # The shell MinIO's image runs: valid syntax, and the policy it writes names the two buckets and nothing
    # else (no s3:*, no bucket creation, no admin action).
    script = script.replace("$$", "$")  # compose hands the container a literal $
    assert subprocess.run(["sh", "-n", "-c", script], capture_output=True, timeout=30).returncode == 0
    policy_part = script[script.index("cat > /tmp/mlops-app.json"):script.index("\nEOF\n") + 5]
    rendered = subprocess.run(["sh", "-c", policy_part.replace("cat > /tmp/mlops-app.json", "cat")],
                              env=s3_init["environment"] | {"PATH": "/usr/bin:/bin"}, capture_output=True,
                              text=True, timeout=30)
    policy = json.loads(rendered.stdout)
    resources = {r for statement in policy["Statement"] for r in statement["Resource"]}
    assert resources == {"arn:aws:s3:::mlflow", "arn:aws:s3:::mlops-data", "arn:aws:s3:::mlflow/*",
                         "arn:aws:s3:::mlops-data/*"}
    actions = {a for statement in policy["Statement"] for a in statement["Action"]}
    assert actions <= {"s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:GetObject",
                       "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
    # The root account reaches mc through the environment, not the command line.
    assert 'export MC_HOST_root=' in script and "mc alias set" not in script
    app_key = hardened["values"]["S3_ACCESS_KEY"]
    for name in ("mlflow", "airflow-scheduler", "airflow-worker"):
        env = hardened["services"][name]["environment"]
        assert env["AWS_ACCESS_KEY_ID"] == app_key, name


def test_mlflow_needs_a_user_of_its_basic_auth_app(hardened):
    mlflow = hardened["services"]["mlflow"]
    assert "--app-name=basic-auth" in mlflow["command"]
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] == "/opt/airflow-mlops/docker/mlflow/basic_auth.ini"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == hardened["values"]["MLFLOW_ADMIN_PASSWORD"]
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"] == hardened["values"]["MLFLOW_FLASK_SECRET_KEY"]
    # Its user store on a volume of its own, which no Airflow service mounts.
    assert any(str(v).startswith("mlflow-auth:") for v in mlflow["volumes"]) or \
        any(isinstance(v, dict) and v.get("source") == "mlflow-auth" for v in mlflow["volumes"])
    for name, svc in hardened["services"].items():
        if name != "mlflow":
            assert "mlflow-auth" not in yaml.safe_dump(svc.get("volumes") or []), name
    ini = (DOCKER / "mlflow" / "basic_auth.ini").read_text()
    assert "database_uri = sqlite:////var/lib/mlflow-auth/" in ini
    assert "admin_password" not in ini.replace("# ", "")  # the password comes from docker/.env only
    # Airflow signs in as a user of its own, made by mlflow-init; only mlflow and mlflow-init hold the admin's.
    conn = json.loads(hardened["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_MLFLOW_DEFAULT"])
    assert (conn["login"], conn["password"]) == ("airflow", hardened["values"]["MLFLOW_AIRFLOW_PASSWORD"])
    admin_password = hardened["values"]["MLFLOW_ADMIN_PASSWORD"]
    holders = {name for name, svc in hardened["services"].items() if admin_password in _flat(svc)}
    assert holders == {"preflight", "mlflow", "mlflow-init"}
    init = hardened["services"]["mlflow-init"]
    assert init["command"] == ["python", "include/scripts/mlflow_users.py"]
    assert init["depends_on"]["mlflow"]["condition"] == "service_healthy"
    assert not any(key.startswith(("AIRFLOW", "AWS")) for key in init["environment"])


def test_redis_requires_its_password_and_the_broker_url_carries_it(hardened):
    redis = hardened["services"]["redis"]
    password = hardened["values"]["REDIS_PASSWORD"]
    assert redis["command"][:2] == ["sh", "-c"]
    assert "exec redis-server -" in redis["command"][2] and "requirepass $${REDIS_PASSWORD}" in redis["command"][2]
    assert password not in " ".join(redis["command"])  # from the environment, not the command line
    assert redis["environment"]["REDIS_PASSWORD"] == password
    assert redis["environment"]["REDISCLI_AUTH"] == password  # the healthcheck's redis-cli signs in
    for name in ("airflow-worker", "airflow-scheduler"):
        assert hardened["services"][name]["environment"]["AIRFLOW__CELERY__BROKER_URL"] == \
            f"redis://:{password}@redis:6379/0"


def test_no_application_service_uses_the_postgres_superuser(hardened):
    superuser = hardened["values"]["POSTGRES_PASSWORD"]
    holders = {name for name, svc in hardened["services"].items() if superuser in _flat(svc)}
    assert holders == {"preflight", "postgres"}
    env = hardened["services"]["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:")
    assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://airflow:")
    assert hardened["services"]["mlflow"]["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith(
        "postgresql+psycopg2://mlflow:")
    roles = (DOCKER / "postgres" / "10-databases.sh").read_text()
    assert roles.count("NOSUPERUSER NOCREATEDB NOCREATEROLE") == 2


def test_image_code_is_read_only_for_the_non_root_runtime_user():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    copies = re.findall(r"^COPY .+$", dockerfile, flags=re.M)
    assert copies and not [c for c in copies if "--chown" in c], "code copied as the runtime user's"
    assert re.search(r"chmod -R go-w /opt/airflow-mlops/plugins /opt/airflow-mlops/dags", dockerfile)
    # Only AIRFLOW_HOME, the local data folder and MLflow's user store belong to the runtime user.
    chowned = re.search(r'chown "\$\{AIRFLOW_UID\}:0" (.+?) \\', dockerfile).group(1).split()
    assert chowned == ["/opt/airflow", "/opt/airflow-mlops/data", "/var/lib/mlflow-auth"]
    users = re.findall(r"^USER (\S+)$", dockerfile, flags=re.M)
    assert users == ["${AIRFLOW_UID}:0"]
    assert 'ARG AIRFLOW_UID=50000' in dockerfile
    # After USER, the build itself fails if the runtime user can write code or installed packages.
    after_user = dockerfile.split("USER ${AIRFLOW_UID}:0", 1)[1]
    assert "find /opt/airflow-mlops /usr/local/lib/python3.11 /usr/local/bin -writable" in after_user
    assert "exit 1" in after_user
    # MLflow's basic-auth settings are in the image where the mlflow service looks for them.
    assert "COPY docker/mlflow/ docker/mlflow/" in dockerfile
    assert "!docker/mlflow/" in (DOCKER / "Dockerfile.dockerignore").read_text()
