"""Real servers on loopback for tests and benchmarks: `mlflow server` and moto's S3 server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status < 500:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"server at {url} not up after {timeout}s: {log_path.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


@dataclass(frozen=True)
class MlflowServer:
    url: str
    root: Path
    #: the admin of its basic-auth app, when it runs one
    username: str | None = None
    password: str | None = None

    def env(self) -> dict[str, str]:
        import json

        conn = {"conn_type": "mlflow", "host": self.url}
        if self.username:
            conn.update(login=self.username, password=self.password)
        return {
            "MLFLOW_TRACKING_URI": self.url,
            "AIRFLOW_CONN_MLFLOW_DEFAULT": json.dumps(conn),
        }


@contextmanager
def mlflow_server(root: Path, port: int | None = None, auth: tuple[str, str] | None = None
                  ) -> Iterator[MlflowServer]:
    """
    `mlflow server` on 127.0.0.1 with a SQLite backend and a local artifact store under ``root``.

    :param auth: (admin user, password): behind MLflow's basic-auth app as the deployment runs it
        (docker/mlflow/basic_auth.ini, its user store under ``root``).
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = root / "mlflow-server.log"
    cmd = [
        str(BIN / "mlflow"), "server",
        "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination", str(root / "artifacts"),
        "--workers", "1",
    ]
    env = dict(os.environ)
    if auth:
        import secrets

        ini = root / "basic_auth.ini"
        deployed = (Path(__file__).resolve().parents[2] / "docker" / "mlflow" / "basic_auth.ini").read_text()
        ini.write_text(deployed.replace("sqlite:////var/lib/mlflow-auth/", f"sqlite:///{root}/"))
        cmd.insert(2, "--app-name=basic-auth")
        env.update({"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_AUTH_ADMIN_USERNAME": auth[0],
                    "MLFLOW_AUTH_ADMIN_PASSWORD": auth[1], "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(32)})
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc, 120, log_path)
        yield MlflowServer(url=f"http://127.0.0.1:{port}", root=root, username=auth[0] if auth else None,
                           password=auth[1] if auth else None)
    finally:
        _stop(proc)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str = "testing-access-key"
    secret_key: str = "testing-secret-key"
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "MLFLOW_S3_ENDPOINT_URL": self.endpoint_url,
        }

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@contextmanager
def s3_server(root: Path, port: int | None = None) -> Iterator[S3Server]:
    """moto's S3 server (real HTTP on 127.0.0.1)."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    log_path = root / "moto-server.log"
    exe = shutil.which("moto_server", path=str(BIN)) or str(BIN / "moto_server")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/moto-api/", proc, 60, log_path)
        yield S3Server(endpoint_url=f"http://127.0.0.1:{port}")
    finally:
        _stop(proc)


@contextmanager
def serving_mlflow(root: Path) -> Iterator[MlflowServer]:
    """A real `mlflow server` on 127.0.0.1; while it runs, the `mlflow_default` connection points at it."""
    with mlflow_server(root) as srv:
        saved = {k: os.environ.get(k) for k in srv.env()}
        os.environ.update(srv.env())
        try:
            yield srv
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
