"""The production topology as one definition, deployed by docker/compose.yaml and started natively (`make up-prod`).

Services: a preflight check of the secrets, PostgreSQL (one database and one least-privilege role each for
Airflow and MLflow), an S3 store (its root account only for s3-init, which makes the buckets and the
application's account), an MLflow server behind basic authentication (PostgreSQL backend, artifacts on S3)
with a user of Airflow's own made by mlflow-init, Redis with a password, the Airflow API server, scheduler,
DAG processor and triggerer with CeleryExecutor, and Celery workers. ``definition()`` says what every service
runs: its command, its environment and the connections between services. The compose file must say the same
(tests/deploy/test_topology_definition.py compares them); ``up()`` runs the same commands with the same
environment on loopback, each service a process tree of its own, each worker in a folder of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack  # noqa: E402  (the `make up` launcher: process helpers shared with it)

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STATE_FILE = "topology.json"
PG_BIN = Path(os.environ.get("MLOPS_PG_BIN", "/usr/lib/postgresql/15/bin"))
POSTGRES_INIT = REPO / "docker" / "postgres" / "10-databases.sh"

# --- the definition ---------------------------------------------------------------------------------------

#: docker/.env keys the definition reads, with the defaults compose applies when a key is unset (None: required).
SETTINGS: dict[str, str | None] = {
    "AIRFLOW_EXECUTOR": "LocalExecutor",
    "AIRFLOW_PORT": "8080",
    "MLFLOW_PORT": "5000",
    "POSTGRES_PASSWORD": None,
    "AIRFLOW_DB": "airflow",
    "AIRFLOW_DB_USER": "airflow",
    "AIRFLOW_DB_PASSWORD": None,
    "MLFLOW_DB": "mlflow",
    "MLFLOW_DB_USER": "mlflow",
    "MLFLOW_DB_PASSWORD": None,
    "S3_ROOT_USER": None,
    "S3_ROOT_PASSWORD": None,
    "S3_ACCESS_KEY": None,
    "S3_SECRET_KEY": None,
    "MLFLOW_BUCKET": "mlflow",
    "DATA_BUCKET": "mlops-data",
    "MLFLOW_ADMIN_USER": "admin",
    "MLFLOW_ADMIN_PASSWORD": None,
    "MLFLOW_AIRFLOW_USER": "airflow",
    "MLFLOW_AIRFLOW_PASSWORD": None,
    "MLFLOW_FLASK_SECRET_KEY": None,
    "REDIS_PASSWORD": None,
    "AIRFLOW_JWT_SECRET": None,
    "AIRFLOW_FERNET_KEY": None,
    "AIRFLOW_USERS": "admin:admin",
}

#: docker/.env keys the preflight service checks (include/scripts/preflight.py SECRETS).
SECRETS_CHECKED = ("POSTGRES_PASSWORD", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB_PASSWORD", "S3_ROOT_USER",
                   "S3_ROOT_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY", "MLFLOW_ADMIN_PASSWORD",
                   "MLFLOW_AIRFLOW_PASSWORD", "MLFLOW_FLASK_SECRET_KEY", "REDIS_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY")

#: Services running the project's image, in start order; their command and environment are the definition's.
APP_SERVICES = ("preflight", "s3-init", "mlflow", "mlflow-init", "airflow-init", "airflow-apiserver", "airflow-scheduler",
                "airflow-dag-processor", "airflow-triggerer", "airflow-worker")
#: Services of third-party images: PostgreSQL, the S3 store (MinIO in compose, moto's server natively), Redis.
INFRA_SERVICES = ("postgres", "s3", "redis")
#: One-shot services: they run to completion before the long-running ones start.
INIT_SERVICES = ("preflight", "s3-init", "mlflow-init", "airflow-init")
#: Where the MLflow server reads its basic-auth settings (the image's copy of docker/mlflow/basic_auth.ini).
MLFLOW_AUTH_CONFIG = "/opt/airflow-mlops/docker/mlflow/basic_auth.ini"
#: The preflight service: nothing else starts while a secret is missing, a known placeholder or too short.
PREFLIGHT = ["python", "include/scripts/preflight.py"]
#: mlflow-init: Airflow's own MLflow user (not an admin), with the admin account only this one-shot holds.
MLFLOW_USERS = ["python", "include/scripts/mlflow_users.py"]

#: s3-init in compose, on the MinIO image with the root account (the only service but s3 holding it): the
#: buckets, a policy limited to them and the application's account with that policy. Idempotent; shell
#: builtins, cat and mc only (the MinIO image has no grep).
MINIO_INIT = """\
set -eu
export MC_HOST_root="${S3_ENDPOINT%%://*}://${S3_ROOT_USER}:${S3_ROOT_PASSWORD}@${S3_ENDPOINT#*://}"
mc mb --ignore-existing "root/${MLFLOW_BUCKET}" "root/${DATA_BUCKET}"
cat > /tmp/mlops-app.json <<EOF
{"Version": "2012-10-17", "Statement": [
  {"Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"],
   "Resource": ["arn:aws:s3:::${MLFLOW_BUCKET}", "arn:aws:s3:::${DATA_BUCKET}"]},
  {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload",
                                 "s3:ListMultipartUploadParts"],
   "Resource": ["arn:aws:s3:::${MLFLOW_BUCKET}/*", "arn:aws:s3:::${DATA_BUCKET}/*"]}]}
EOF
mc admin policy create root mlops-app /tmp/mlops-app.json
mc admin user add root "${S3_ACCESS_KEY}" "${S3_SECRET_KEY}"
if ! mc admin policy attach root mlops-app --user "${S3_ACCESS_KEY}" >/dev/null 2>&1; then
  case "$(mc admin user info root "${S3_ACCESS_KEY}")" in
    *mlops-app*) ;;
    *) echo "s3-init: could not give ${S3_ACCESS_KEY} the policy mlops-app" >&2; exit 1 ;;
  esac
fi
echo "buckets ${MLFLOW_BUCKET} ${DATA_BUCKET} ready; the application's account is limited to them"
"""

#: s3-init natively: moto's server takes any key and has no accounts to make, only the buckets.
S3_INIT = """\
import os, boto3
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
have = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for bucket in (os.environ["MLFLOW_BUCKET"], os.environ["DATA_BUCKET"]):
    if bucket not in have:
        s3.create_bucket(Bucket=bucket)
    print("bucket ready:", bucket)
"""

#: airflow-init: the metadata schema, then the bundled data set on S3 unless it is there already.
AIRFLOW_INIT = """\
set -e
airflow db migrate
python include/datasets/build_rainfall.py --if-missing --out "${MLOPS_DATA_DIR}/rainfall/rainfall.parquet"
"""


@dataclass(frozen=True)
class Addresses:
    """How services reach each other (``internal``) and how a browser reaches them (``public``)."""

    postgres: str = "postgres:5432"
    redis: str = "redis:6379"
    s3: str = "http://s3:9000"
    mlflow: str = "http://mlflow:5000"
    apiserver: str = "http://airflow-apiserver:8080"
    #: where the API server and the MLflow server listen inside their host or container
    api_bind: tuple[str, int] = ("0.0.0.0", 8080)
    mlflow_bind: tuple[str, int] = ("0.0.0.0", 5000)
    public_api: str = "http://localhost:${AIRFLOW_PORT}"
    public_mlflow: str = "http://localhost:${MLFLOW_PORT}"
    #: Host headers MLflow accepts (DNS-rebinding protection)
    mlflow_allowed_hosts: str = "mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*"


@dataclass(frozen=True)
class Service:
    """One service of the topology: what it runs and with which environment."""

    name: str
    #: argv; None for third-party images that run their own entry point
    command: list[str] | None
    environment: dict[str, str]
    #: other services that must be healthy (or have completed, for init services) first
    depends_on: tuple[str, ...] = ()
    #: the image's entry point replaced (s3-init runs a shell on the MinIO image)
    entrypoint: list[str] | None = None


def settings_with_defaults(values: dict[str, str]) -> dict[str, str]:
    """The docker/.env values with compose's defaults filled in; a missing required value is an error."""
    out: dict[str, str] = {}
    for key, default in SETTINGS.items():
        value = values.get(key) or default
        if value is None:
            raise ValueError(f"{key} has no value: expected it in docker/.env (see docker/.env.example)")
        out[key] = value
    return out


def _sub(template: str, s: dict[str, str]) -> str:
    for key, value in s.items():
        template = template.replace("${" + key + "}", value)
    return template


def airflow_environment(s: dict[str, str], a: Addresses) -> dict[str, str]:
    """The environment every Airflow component and worker shares (compose: ``x-airflow-common``)."""
    db = f"{s['AIRFLOW_DB_USER']}:{s['AIRFLOW_DB_PASSWORD']}@{a.postgres}/{s['AIRFLOW_DB']}"
    return {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://{db}",
        "AIRFLOW__CORE__EXECUTOR": s["AIRFLOW_EXECUTOR"],
        "AIRFLOW__CELERY__BROKER_URL": f"redis://:{s['REDIS_PASSWORD']}@{a.redis}/0",
        # The driver named: SQLAlchemy 2.1 would pick psycopg (3), which the image does not ship.
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://{db}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__API_AUTH__JWT_SECRET": s["AIRFLOW_JWT_SECRET"],
        "AIRFLOW__CORE__FERNET_KEY": s["AIRFLOW_FERNET_KEY"],
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{a.apiserver}/execution/",
        "AIRFLOW__API__HOST": a.api_bind[0],
        "AIRFLOW__API__PORT": str(a.api_bind[1]),
        "AIRFLOW__API__BASE_URL": _sub(a.public_api, s),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": s["AIRFLOW_USERS"],
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        # MLflow's basic auth with Airflow's own user (no admin): the hook hands login and password to the
        # client, never to a log line.
        "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(
            {"conn_type": "mlflow", "host": a.mlflow, "login": s["MLFLOW_AIRFLOW_USER"],
             "password": s["MLFLOW_AIRFLOW_PASSWORD"], "extra": {"ui_url": _sub(a.public_mlflow, s)}}),
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {"conn_type": "aws", "login": s["S3_ACCESS_KEY"], "password": s["S3_SECRET_KEY"],
             "extra": {"endpoint_url": a.s3, "region_name": "us-east-1"}}),
        **s3_environment(s, a),
        "MLOPS_DATA_DIR": f"s3://{s['DATA_BUCKET']}/data",
    }


def s3_environment(s: dict[str, str], a: Addresses) -> dict[str, str]:
    """boto3 and MLflow's S3 client read these: checkpoints and data go direct, model artifacts via MLflow.

    The application's account, limited to its two buckets; the root account stays with s3 and s3-init.
    """
    return {
        "AWS_ACCESS_KEY_ID": s["S3_ACCESS_KEY"],
        "AWS_SECRET_ACCESS_KEY": s["S3_SECRET_KEY"],
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": a.s3,
        "MLFLOW_S3_ENDPOINT_URL": a.s3,
    }


def definition(values: dict[str, str], a: Addresses | None = None) -> dict[str, Service]:
    """Every service of the topology from the docker/.env values and the addresses services reach each other at."""
    a = a or Addresses()
    s = settings_with_defaults(values)
    common = airflow_environment(s, a)
    core_deps = ("postgres", "mlflow", "mlflow-init", "airflow-init")
    out = [
        # Every secret by its docker/.env name: nothing starts while one is missing or a placeholder.
        Service("preflight", PREFLIGHT, {k: s[k] for k in SECRETS_CHECKED}),
        Service("postgres", None, {
            "POSTGRES_PASSWORD": s["POSTGRES_PASSWORD"],
            **{k: s[k] for k in ("AIRFLOW_DB", "AIRFLOW_DB_USER", "AIRFLOW_DB_PASSWORD", "MLFLOW_DB",
                                 "MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD")},
        }),
        Service("s3", None, {"MINIO_ROOT_USER": s["S3_ROOT_USER"], "MINIO_ROOT_PASSWORD": s["S3_ROOT_PASSWORD"]}),
        Service("redis", None, {"REDIS_PASSWORD": s["REDIS_PASSWORD"], "REDISCLI_AUTH": s["REDIS_PASSWORD"]}),
        Service("s3-init", [MINIO_INIT], {
            "S3_ENDPOINT": a.s3,
            **{k: s[k] for k in ("S3_ROOT_USER", "S3_ROOT_PASSWORD", "S3_ACCESS_KEY", "S3_SECRET_KEY",
                                 "MLFLOW_BUCKET", "DATA_BUCKET")},
        }, ("s3",), entrypoint=["/bin/sh", "-c"]),
        # MLflow gets its own database role and the application's S3 keys, nothing of Airflow's; the backend
        # URI (with its password) is read from the environment, not the command line other local users can
        # list. Every request but /health needs a user of its basic-auth app; the admin comes from docker/.env.
        Service("mlflow", [
            "mlflow", "server", "--app-name=basic-auth", f"--host={a.mlflow_bind[0]}",
            f"--port={a.mlflow_bind[1]}", "--workers=2",
            f"--artifacts-destination=s3://{s['MLFLOW_BUCKET']}/artifacts", "--serve-artifacts",
            f"--allowed-hosts={a.mlflow_allowed_hosts}",
        ], {
            "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://{s['MLFLOW_DB_USER']}:{s['MLFLOW_DB_PASSWORD']}"
                                        f"@{a.postgres}/{s['MLFLOW_DB']}",
            **s3_environment(s, a),
            # No background job runner (huey) next to the server: nothing here submits MLflow jobs.
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_AUTH_CONFIG_PATH": MLFLOW_AUTH_CONFIG,
            "MLFLOW_AUTH_ADMIN_USERNAME": s["MLFLOW_ADMIN_USER"],
            "MLFLOW_AUTH_ADMIN_PASSWORD": s["MLFLOW_ADMIN_PASSWORD"],
            "MLFLOW_FLASK_SERVER_SECRET_KEY": s["MLFLOW_FLASK_SECRET_KEY"],
        }, ("postgres", "s3-init")),
        Service("mlflow-init", MLFLOW_USERS, {
            "MLFLOW_TRACKING_URI": a.mlflow,
            **{k: s[k] for k in ("MLFLOW_ADMIN_USER", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_AIRFLOW_USER",
                                 "MLFLOW_AIRFLOW_PASSWORD")},
        }, ("mlflow",)),
        Service("airflow-init", ["bash", "-c", AIRFLOW_INIT], common, ("postgres", "s3-init")),
        Service("airflow-apiserver", ["airflow", "api-server"], common, core_deps),
        Service("airflow-scheduler", ["airflow", "scheduler"], common, core_deps),
        Service("airflow-dag-processor", ["airflow", "dag-processor"], common, core_deps),
        Service("airflow-triggerer", ["airflow", "triggerer"], common, core_deps),
        Service("airflow-worker", ["airflow", "celery", "worker"], common, (*core_deps, "redis")),
    ]
    return {svc.name: svc for svc in out}


# --- native deployment ------------------------------------------------------------------------------------

#: Environment only the native topology sets: what the image's Dockerfile sets (home, config, folders), ports
#: that containers would not share, the worker's node name, and the interpreter's paths.
NATIVE_ONLY_ENV = frozenset({
    "AIRFLOW_HOME", "AIRFLOW_CONFIG", "AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER",
    "GIT_PYTHON_REFRESH", "PYTHONUNBUFFERED", "MLOPS_PROJECT_ROOT",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE", "MLOPS_NODE_NAME",
    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT", "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
})
NODE_ENV = "MLOPS_NODE_NAME"


def node_name() -> str:
    """``[core] hostname_callable`` of native workers: two workers on one machine report as two hosts would."""
    return os.environ.get(NODE_ENV) or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TopologyConfig:
    """Where the native topology lives and how it is sized; ports are picked free at start unless given."""

    home: Path
    workers: int = 2
    host: str = "127.0.0.1"
    ports: dict[str, int] = field(default_factory=dict)
    #: docker/.env values; missing secrets are generated once and kept in ``home`` (mode 0600)
    values: dict[str, str] = field(default_factory=dict)
    #: extra environment of every Airflow process (e.g. shorter heartbeat timeouts in tests)
    extra_env: dict[str, str] = field(default_factory=dict)
    #: PostgreSQL's data folder; default ``<home>/postgres``, or a folder in the temp dir the ``postgres``
    #: user can reach when running as root (PostgreSQL refuses to run as root)
    pg_dir: Path | None = None

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")

    @property
    def control_home(self) -> Path:
        """AIRFLOW_HOME of the API server, scheduler, DAG processor and triggerer (one control-plane host)."""
        return self.home / "control"

    def worker_home(self, name: str) -> Path:
        return self.home / name

    def worker_names(self) -> list[str]:
        return [f"worker-{i}" for i in range(1, self.workers + 1)]


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _settings(cfg: TopologyConfig) -> dict[str, str]:
    """docker/.env values for the native topology: the given ones, generated secrets for the rest."""
    path = cfg.home / "settings.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    generators = {
        "POSTGRES_PASSWORD": lambda: secrets.token_hex(16),
        "AIRFLOW_DB_PASSWORD": lambda: secrets.token_hex(16),
        "MLFLOW_DB_PASSWORD": lambda: secrets.token_hex(16),
        "S3_ROOT_USER": lambda: "s3root" + secrets.token_hex(6),
        "S3_ROOT_PASSWORD": lambda: secrets.token_hex(16),
        "S3_ACCESS_KEY": lambda: "mlops" + secrets.token_hex(6),
        "S3_SECRET_KEY": lambda: secrets.token_hex(16),
        "MLFLOW_ADMIN_PASSWORD": lambda: secrets.token_hex(16),
        "MLFLOW_AIRFLOW_PASSWORD": lambda: secrets.token_hex(16),
        "MLFLOW_FLASK_SECRET_KEY": lambda: secrets.token_hex(32),
        "REDIS_PASSWORD": lambda: secrets.token_hex(16),
        "AIRFLOW_JWT_SECRET": lambda: secrets.token_hex(32),
        "AIRFLOW_FERNET_KEY": _fernet_key,
    }
    missing = {k: make() for k, make in generators.items() if k not in saved}
    if missing:
        saved.update(missing)
        path.touch(mode=0o600)
        path.write_text(json.dumps(saved))
    return {**saved, "AIRFLOW_EXECUTOR": "CeleryExecutor", **cfg.values}


def native_addresses(cfg: TopologyConfig) -> Addresses:
    h, p = cfg.host, cfg.ports
    return Addresses(
        postgres=f"{h}:{p['postgres']}", redis=f"{h}:{p['redis']}", s3=f"http://{h}:{p['s3']}",
        mlflow=f"http://{h}:{p['mlflow']}", apiserver=f"http://{h}:{p['api']}",
        api_bind=(h, p["api"]), mlflow_bind=(h, p["mlflow"]),
        public_api=f"http://{h}:{p['api']}", public_mlflow=f"http://{h}:{p['mlflow']}",
    )


def native_environment(cfg: TopologyConfig, svc: Service, worker: str | None = None) -> dict[str, str]:
    """The service's environment from the definition plus what the image would set (see NATIVE_ONLY_ENV)."""
    home = cfg.worker_home(worker) if worker else cfg.control_home
    env = dict(os.environ)
    # A caller's Airflow or AWS settings must not leak into the topology's processes.
    for key in list(env):
        if key.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "AWS_", "MLFLOW_")):
            del env[key]
    env.update(svc.environment)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW_CONFIG": str(REPO / "airflow.cfg"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "MLOPS_PROJECT_ROOT": str(REPO),
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join(p for p in (str(Path(__file__).resolve().parent),
                                                  env.get("PYTHONPATH", "")) if p),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(cfg.ports["trigger_logs"]),
    })
    if worker:
        env.update({
            NODE_ENV: worker,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "topology.node_name",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(cfg.ports[f"{worker}_logs"]),
        })
    if svc.name.startswith("airflow-"):
        env.update(cfg.extra_env)
    return env


def mlflow_native_environment(cfg: TopologyConfig, svc: Service) -> dict[str, str]:
    """The MLflow server's environment natively: its basic-auth users in a SQLite file of the topology's own."""
    folder = cfg.home / "mlflow"
    folder.mkdir(parents=True, exist_ok=True)
    ini = folder / "basic_auth.ini"
    text = (REPO / "docker" / "mlflow" / "basic_auth.ini").read_text()
    ini.write_text(text.replace("sqlite:////var/lib/mlflow-auth/", f"sqlite:///{folder}/"))
    return {**native_environment(cfg, svc), "MLFLOW_AUTH_CONFIG_PATH": str(ini)}


def native_command(cfg: TopologyConfig, svc: Service, worker: str | None = None) -> list[str]:
    """The definition's command, with the worker's name given explicitly (in compose, its container's)."""
    assert svc.command is not None
    cmd = list(svc.command)
    if worker:
        cmd += ["--celery-hostname", f"{worker}@%h"]
    exe = shutil.which(cmd[0], path=str(BIN)) or shutil.which(cmd[0])
    return [exe or cmd[0], *cmd[1:]]


def _log(cfg: TopologyConfig, name: str) -> Path:
    return cfg.home / "logs" / f"{name}.log"


def _spawn(cfg: TopologyConfig, name: str, cmd: list[str], env: dict[str, str], cwd: Path) -> dict[str, object]:
    cwd.mkdir(parents=True, exist_ok=True)
    offset = _log(cfg, name).stat().st_size if _log(cfg, name).exists() else 0
    with open(_log(cfg, name), "ab") as log:
        # A session of its own per service: one process tree per service, as one container each.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(cwd), start_new_session=True)
    return {"name": name, "pid": proc.pid, "log": str(_log(cfg, name)), "started": stack._create_time(proc.pid),
            "cwd": str(cwd), "offset": offset}


def _run(cfg: TopologyConfig, name: str, cmd: list[str], env: dict[str, str], cwd: Path,
         timeout: float = 600) -> None:
    with open(_log(cfg, name), "ab") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                              cwd=str(cwd), timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}); last log lines:\n"
                           f"{_log(cfg, name).read_text(errors='replace')[-3000:]}")


# PostgreSQL: a cluster of the topology's own, initialised in a folder, never the system service.

def _as_pg_user() -> list[str]:
    """PostgreSQL refuses to run as root: run its programs as the ``postgres`` user then."""
    if os.geteuid() != 0:
        return []
    return ["runuser", "-u", "postgres", "--"]


def _pg_dir(cfg: TopologyConfig) -> Path:
    if cfg.pg_dir:
        return Path(cfg.pg_dir)
    if os.geteuid() != 0:
        return cfg.home / "postgres"
    # The postgres user must reach the folder: a private temp dir of root's (pytest's) would not do.
    import hashlib

    return Path(tempfile.gettempdir()) / f"mlops-pg-{hashlib.sha256(str(cfg.home).encode()).hexdigest()[:12]}"


def _start_postgres(cfg: TopologyConfig, svc: Service) -> dict[str, object]:
    pg = _pg_dir(cfg)
    data, sock = pg / "data", pg / "run"
    pg.mkdir(parents=True, exist_ok=True)
    sock.mkdir(exist_ok=True)
    os.chmod(pg, 0o700)
    if os.geteuid() == 0:
        shutil.chown(pg, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        pwfile = pg / "pwfile"
        pwfile.write_text(svc.environment["POSTGRES_PASSWORD"])
        if os.geteuid() == 0:
            shutil.chown(pwfile, "postgres", "postgres")
        # Password (scram) over TCP, peer-less trust only on the socket in the cluster's private folder.
        _run(cfg, "postgres", [*_as_pg_user(), str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                               f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
                               "-E", "UTF8"], os.environ.copy(), pg)
        pwfile.unlink()
    options = (f"-p {cfg.ports['postgres']} -k {sock} -c listen_addresses={cfg.host} "
               "-c max_connections=200 -c fsync=off -c full_page_writes=off")
    _run(cfg, "postgres", [*_as_pg_user(), str(PG_BIN / "pg_ctl"), "-D", str(data), "-l",
                           str(pg / "postgres.log"), "-o", options, "-w", "-t", "60", "start"],
         os.environ.copy(), pg)
    if fresh:
        env = {**os.environ, **svc.environment, "POSTGRES_USER": "postgres", "POSTGRES_DB": "postgres",
               "PGHOST": str(sock), "PGPORT": str(cfg.ports["postgres"])}
        _run(cfg, "postgres-init", ["sh", str(POSTGRES_INIT)], env, cfg.home)
    pid = int((data / "postmaster.pid").read_text().split()[0])
    return {"name": "postgres", "pid": pid, "log": str(pg / "postgres.log"), "started": stack._create_time(pid),
            "pg_dir": str(pg)}


def _stop_postgres(entry: dict[str, object]) -> None:
    data = Path(str(entry["pg_dir"])) / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run([*_as_pg_user(), str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, check=False, timeout=120)


def _wait(cfg: TopologyConfig, entry: dict[str, object], ready, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not stack._alive(entry):
            raise RuntimeError(f"{entry['name']} exited during start; last log lines:\n"
                               f"{Path(str(entry['log'])).read_text(errors='replace')[-3000:]}")
        if ready():
            return
        time.sleep(0.5)
    raise RuntimeError(f"{entry['name']} not ready after {timeout:.0f}s; log {entry['log']}")


def _tcp_ready(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Topology:
    """The native topology: started by ``up()``, services restarted or killed one by one, stopped by ``down()``."""

    def __init__(self, cfg: TopologyConfig) -> None:
        self.cfg = cfg
        self.state_path = cfg.home / STATE_FILE
        self.state: dict[str, object] = {"processes": {}}
        if self.state_path.exists():
            self.state = json.loads(self.state_path.read_text())
            cfg.ports.update(self.state.get("ports", {}))

    # -- what tests and users need to reach it
    @property
    def values(self) -> dict[str, str]:
        """The docker/.env values of this topology, compose's defaults filled in."""
        return settings_with_defaults(_settings(self.cfg))

    @property
    def services(self) -> dict[str, Service]:
        return definition(self.values, native_addresses(self.cfg))

    @property
    def addresses(self) -> Addresses:
        return native_addresses(self.cfg)

    @property
    def processes(self) -> dict[str, dict[str, object]]:
        return self.state["processes"]  # type: ignore[return-value]

    def admin_password(self) -> str:
        return json.loads((self.cfg.control_home / "simple_auth_manager_passwords.json.generated").read_text())[
            "admin"]

    def _save(self) -> None:
        self.state["ports"] = self.cfg.ports
        self.state_path.write_text(json.dumps(self.state, indent=2))

    # -- start
    def _pick_ports(self) -> None:
        names = ["postgres", "redis", "s3", "mlflow", "api", "trigger_logs"]
        names += [f"{w}_logs" for w in self.cfg.worker_names()]
        for name in names:
            self.cfg.ports.setdefault(name, free_port())

    def up(self, timeout: float = 600) -> None:
        cfg = self.cfg
        if any(stack._alive(p) for p in self.processes.values()):
            raise SystemExit(f"The topology is already running (state in {self.state_path}); stop it first.")
        self.state = {"processes": {}}
        for folder in (cfg.home, cfg.home / "logs", cfg.control_home):
            folder.mkdir(parents=True, exist_ok=True)
        self._pick_ports()
        self._save()
        try:
            self._up(timeout)
        except BaseException:
            self.down(grace=10)
            raise

    def _up(self, timeout: float) -> None:
        cfg, services = self.cfg, self.services
        deadline = time.monotonic() + timeout
        left = lambda: max(deadline - time.monotonic(), 1)  # noqa: E731
        check = services["preflight"]
        _run(cfg, "preflight", native_command(cfg, check), native_environment(cfg, check), REPO, left())
        self.processes["postgres"] = _start_postgres(cfg, services["postgres"])
        self._save()
        self.start_infra("redis", left())
        self.start_infra("s3", left())
        init = services["s3-init"]
        # moto's server has no accounts: the buckets only, made with the application's keys (MINIO_INIT
        # is what compose runs on MinIO with the root account).
        env = {**native_environment(cfg, init), **s3_environment(self.values, self.addresses)}
        _run(cfg, "s3-init", [str(BIN / "python"), "-c", S3_INIT], env, REPO, left())
        self.start_mlflow(left())
        init = services["mlflow-init"]
        _run(cfg, "mlflow-init", native_command(cfg, init), native_environment(cfg, init), REPO, left())
        init = services["airflow-init"]
        _run(cfg, "airflow-init", native_command(cfg, init), native_environment(cfg, init), REPO, left())
        for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
            svc = services[name]
            self.processes[name] = _spawn(cfg, name, native_command(cfg, svc), native_environment(cfg, svc),
                                          cfg.control_home)
        self._save()
        for worker in cfg.worker_names():
            self.start_worker(worker, wait=False)
        _wait(cfg, self.processes["airflow-apiserver"], lambda: stack.airflow_ready(self.api_url), left())
        for worker in cfg.worker_names():
            self.wait_worker(worker, left())

    def start_infra(self, name: str, timeout: float = 60) -> None:
        cfg = self.cfg
        host = cfg.host
        if name == "redis":
            data = cfg.home / "redis"
            data.mkdir(exist_ok=True)
            # The password in a private configuration file, not on the command line.
            conf = data / "redis.conf"
            conf.touch(mode=0o600)
            conf.write_text(f"requirepass {self.services['redis'].environment['REDIS_PASSWORD']}\n")
            cmd = ["redis-server", str(conf), "--bind", host, "--port", str(cfg.ports["redis"]), "--save", "",
                   "--appendonly", "no", "--dir", str(data), "--protected-mode", "yes"]
            entry = _spawn(cfg, name, cmd, os.environ.copy(), data)
            ready = lambda: _tcp_ready(host, cfg.ports["redis"])  # noqa: E731
        elif name == "s3":
            exe = shutil.which("moto_server", path=str(BIN)) or str(BIN / "moto_server")
            entry = _spawn(cfg, name, [exe, "-H", host, "-p", str(cfg.ports["s3"])], os.environ.copy(),
                           cfg.home / "s3")
            ready = lambda: stack._get(f"http://{host}:{cfg.ports['s3']}/moto-api/")[0] == 200  # noqa: E731
        else:
            raise ValueError(f"unknown infrastructure service {name!r}")
        self.processes[name] = entry
        self._save()
        _wait(cfg, entry, ready, timeout)

    def start_mlflow(self, timeout: float = 180) -> None:
        cfg, svc = self.cfg, self.services["mlflow"]
        entry = _spawn(cfg, "mlflow", native_command(cfg, svc), mlflow_native_environment(cfg, svc),
                       cfg.home / "mlflow")
        self.processes["mlflow"] = entry
        self._save()
        _wait(cfg, entry, lambda: stack._get(f"{self.mlflow_url}/health")[0] == 200, timeout)

    def start_worker(self, worker: str, wait: bool = True, timeout: float = 180) -> None:
        """A Celery worker in a folder of its own (its AIRFLOW_HOME, logs and working directory)."""
        cfg, svc = self.cfg, self.services["airflow-worker"]
        self.cfg.ports.setdefault(f"{worker}_logs", free_port())
        home = cfg.worker_home(worker)
        home.mkdir(parents=True, exist_ok=True)
        self.processes[worker] = _spawn(cfg, worker, native_command(cfg, svc, worker),
                                        native_environment(cfg, svc, worker), home)
        self._save()
        if wait:
            self.wait_worker(worker, timeout)

    def wait_worker(self, worker: str, timeout: float = 180) -> None:
        entry = self.processes[worker]
        log, offset = Path(str(entry["log"])), int(entry.get("offset", 0))  # type: ignore[call-overload]

        def ready() -> bool:
            with open(log, "rb") as fh:
                fh.seek(offset)
                text = fh.read()
            return f"{worker}@".encode() in text and b" ready." in text

        _wait(self.cfg, entry, ready, timeout)

    # -- stop
    def stop(self, name: str, grace: float = 30) -> None:
        entry = self.processes.pop(name, None)
        if entry is None:
            return
        if name == "postgres":
            _stop_postgres(entry)
        elif stack._alive(entry):
            stack.stop_processes([int(entry["pid"])], grace=grace)  # type: ignore[arg-type]
        self._save()

    def down(self, grace: float = 30) -> list[str]:
        """Stop everything, the workers first and PostgreSQL last; returns the names that were running."""
        order = [*(n for n in self.processes if n.startswith("worker-")), "airflow-scheduler",
                 "airflow-triggerer", "airflow-dag-processor", "airflow-apiserver", "mlflow", "s3", "redis",
                 "postgres"]
        running = [n for n in order if n in self.processes]
        leaders = [int(self.processes[n]["pid"]) for n in running  # type: ignore[arg-type]
                   if n != "postgres" and stack._alive(self.processes[n])]
        stack.stop_processes(leaders, grace=grace)
        if "postgres" in self.processes:
            _stop_postgres(self.processes["postgres"])
        self.state["processes"] = {}
        self._save()
        return running

    def destroy(self) -> None:
        """Stop and delete every folder, the PostgreSQL cluster's too."""
        self.down(grace=10)
        shutil.rmtree(_pg_dir(self.cfg), ignore_errors=True)
        shutil.rmtree(self.cfg.home, ignore_errors=True)

    # -- addresses
    @property
    def api_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports['api']}"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports['mlflow']}"

    @property
    def s3_url(self) -> str:
        return f"http://{self.cfg.host}:{self.cfg.ports['s3']}"


def config_from_env() -> TopologyConfig:
    env = os.environ
    return TopologyConfig(home=Path(env.get("MLOPS_PROD_HOME", str(REPO / ".airflow-prod"))),
                          workers=int(env.get("MLOPS_WORKERS", "2")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "destroy"])
    parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for every service")
    args = parser.parse_args(argv)
    topo = Topology(config_from_env())
    if args.command == "up":
        topo.up(timeout=args.timeout)
        print(f"Airflow UI:  {topo.api_url}   (user admin, password in "
              f"{topo.cfg.control_home}/simple_auth_manager_passwords.json.generated)")
        print(f"MLflow UI:   {topo.mlflow_url}")
        print(f"S3:          {topo.s3_url}   (keys in {topo.cfg.home}/settings.json)")
        print(f"workers:     {', '.join(topo.cfg.worker_names())} (folders under {topo.cfg.home})")
        print(f"logs:        {topo.cfg.home}/logs/*.log")
        print("stop with:   make down-prod")
    elif args.command == "down":
        stopped = topo.down()
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    elif args.command == "destroy":
        topo.destroy()
        print(f"removed {topo.cfg.home}")
    else:
        if not topo.processes:
            print("not running")
            return 1
        for name, p in topo.processes.items():
            print(f"{name}: pid {p['pid']} {'running' if stack._alive(p) else 'stopped'}  log {p['log']}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    sys.exit(main())
