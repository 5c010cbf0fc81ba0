"""Start and stop the local stack (`make up` / `make down`): Airflow standalone and the MLflow UI on loopback."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STATE_FILE = "stack.json"


@dataclass
class StackConfig:
    """Where the stack lives and listens. Every path and port can come from the environment (see ``from_env``)."""

    airflow_home: Path
    airflow_config: Path = REPO / "airflow.cfg"
    host: str = "127.0.0.1"
    airflow_port: int = 8088
    mlflow_port: int = 5000
    #: SQLite tracking + registry and local artifacts of the MLflow UI; None starts no MLflow UI.
    mlflow_dir: Path | None = None
    #: The MLflow UI address shown in extra links; defaults to the started MLflow UI.
    mlflow_ui_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.airflow_home = Path(self.airflow_home).resolve()
        if not (0 < self.airflow_port < 65536 and 0 < self.mlflow_port < 65536):
            raise ValueError(f"ports must be in 1..65535, got airflow={self.airflow_port} mlflow={self.mlflow_port}")

    @classmethod
    def from_env(cls) -> StackConfig:
        env = os.environ
        mlflow_dir = env.get("MLOPS_MLFLOW_DIR", str(REPO / ".mlflow"))
        return cls(
            airflow_home=Path(env.get("AIRFLOW_HOME", str(REPO / ".airflow"))),
            airflow_config=Path(env.get("AIRFLOW_CONFIG", str(REPO / "airflow.cfg"))),
            airflow_port=int(env.get("AIRFLOW_PORT", "8088")),
            mlflow_port=int(env.get("MLFLOW_PORT", "5000")),
            mlflow_dir=Path(mlflow_dir) if mlflow_dir else None,
        )

    @property
    def run_dir(self) -> Path:
        return self.airflow_home / "stack"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.airflow_port}"

    @property
    def mlflow_url(self) -> str | None:
        if self.mlflow_ui_url:
            return self.mlflow_ui_url
        return f"http://{self.host}:{self.mlflow_port}" if self.mlflow_dir else None

    @property
    def password_file(self) -> Path:
        return self.airflow_home / "simple_auth_manager_passwords.json.generated"


def _secrets(run_dir: Path) -> dict[str, str]:
    """The JWT secret and Fernet key every Airflow component must share; made once, kept private to the user."""
    path = run_dir / "secrets.json"
    if path.exists():
        return json.loads(path.read_text())
    from cryptography.fernet import Fernet

    values = {"jwt_secret": secrets.token_urlsafe(48), "fernet_key": Fernet.generate_key().decode()}
    path.touch(mode=0o600)
    path.write_text(json.dumps(values))
    return values


def airflow_env(cfg: StackConfig) -> dict[str, str]:
    """Environment of the Airflow processes: the project's airflow.cfg, loopback ports kept consistent."""
    keys = _secrets(cfg.run_dir)
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(cfg.airflow_home),
        "AIRFLOW_CONFIG": str(cfg.airflow_config),
        # airflow.cfg finds dags/ and plugins/ next to the default home; a home elsewhere needs them named.
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "AIRFLOW__API__HOST": cfg.host,
        "AIRFLOW__API__PORT": str(cfg.airflow_port),
        "AIRFLOW__API__BASE_URL": cfg.airflow_url,
        # Tasks reach the API server here: a port that differs from [api] port fails every task.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{cfg.airflow_url}/execution/",
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__CORE__FERNET_KEY": keys["fernet_key"],
        "GIT_PYTHON_REFRESH": "quiet",
        "PYTHONUNBUFFERED": "1",
    })
    if cfg.mlflow_url:
        env["MLOPS_MLFLOW_UI_URL"] = cfg.mlflow_url
    env.update(cfg.extra_env)
    return env


def _spawn(name: str, cmd: list[str], env: dict[str, str], cfg: StackConfig) -> dict[str, object]:
    log_path = cfg.run_dir / f"{name}.log"
    with open(log_path, "ab") as log:
        # A session of its own: stopping kills the whole process group, children included.
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(REPO), start_new_session=True)
    return {"name": name, "pid": proc.pid, "log": str(log_path), "started": _create_time(proc.pid)}


def _create_time(pid: int) -> float | None:
    try:
        import psutil

        return psutil.Process(pid).create_time()
    except Exception:
        return None


def _get(url: str, timeout: float = 3) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except OSError:
        return 0, b""


def airflow_ready(url: str) -> bool:
    """Scheduler, dag processor and triggerer heartbeating, metadata DB reachable (Airflow's health endpoint)."""
    code, body = _get(f"{url}/api/v2/monitor/health")
    if code != 200:
        return False
    health = json.loads(body)
    return all((health.get(part) or {}).get("status") == "healthy"
               for part in ("metadatabase", "scheduler", "triggerer", "dag_processor"))


def _alive(entry: dict[str, object]) -> bool:
    pid = int(entry["pid"])  # type: ignore[arg-type]
    try:
        import psutil

        proc = psutil.Process(pid)
        if entry.get("started") and abs(proc.create_time() - float(entry["started"])) > 1:  # type: ignore[arg-type]
            return False  # the pid was reused by an unrelated process
        return proc.status() != psutil.STATUS_ZOMBIE
    except ImportError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
    except Exception:
        return False


def up(cfg: StackConfig, timeout: float = 300) -> dict[str, object]:
    """Start the stack in the background and wait until every part answers; returns the recorded state."""
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    state_path = cfg.run_dir / STATE_FILE
    if state_path.exists():
        state = json.loads(state_path.read_text())
        if any(_alive(p) for p in state["processes"]):
            raise SystemExit(f"The stack is already running (state in {state_path}); run `make down` first.")
    env = airflow_env(cfg)
    procs = []
    if cfg.mlflow_dir:
        cfg.mlflow_dir.mkdir(parents=True, exist_ok=True)
        (cfg.mlflow_dir / "artifacts").mkdir(exist_ok=True)
        procs.append(_spawn("mlflow", [
            str(BIN / "mlflow"), "server", "--host", cfg.host, "--port", str(cfg.mlflow_port),
            "--backend-store-uri", f"sqlite:///{cfg.mlflow_dir}/mlflow.db",
            "--default-artifact-root", str(cfg.mlflow_dir / "artifacts"), "--workers", "1",
        ], {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, cfg))
    procs.append(_spawn("airflow", [str(BIN / "airflow"), "standalone"], env, cfg))
    state = {"processes": procs, "airflow_url": cfg.airflow_url, "mlflow_url": cfg.mlflow_url,
             "password_file": str(cfg.password_file)}
    state_path.write_text(json.dumps(state, indent=2))

    deadline = time.monotonic() + timeout
    waiting = {p["name"] for p in procs}
    while waiting and time.monotonic() < deadline:
        for p in procs:
            if p["name"] in waiting and not _alive(p):
                down(cfg)
                tail = Path(str(p["log"])).read_text(errors="replace")[-3000:]
                raise SystemExit(f"{p['name']} exited during start; last log lines:\n{tail}")
        if "mlflow" in waiting and _get(f"{cfg.mlflow_url}/health")[0] == 200:
            waiting.discard("mlflow")
        if "airflow" in waiting and airflow_ready(cfg.airflow_url):
            waiting.discard("airflow")
        time.sleep(1)
    if waiting:
        down(cfg)
        raise SystemExit(f"{sorted(waiting)} not ready after {timeout:.0f}s; logs in {cfg.run_dir}")
    return state


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:
        return []


def _signal_all(pids: list[int], groups: list[int], sig: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _running(pids: list[int]) -> list[int]:
    try:
        import psutil
    except ImportError:
        return [p for p in pids if Path(f"/proc/{p}").exists()]
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            continue
    return out


def stop_processes(leaders: list[int], grace: float = 30) -> list[int]:
    """
    SIGTERM every process group and every descendant (torchrun starts its workers in sessions of their own),
    then SIGKILL what is left after ``grace`` seconds. Returns the pids that had to be killed.
    """
    pids = sorted({p for leader in leaders for p in [leader, *_descendants(leader)]})
    _signal_all(pids, leaders, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        # Processes started while shutting down (a task supervisor's child) are caught too.
        pids = sorted(set(pids) | {p for leader in leaders for p in _descendants(leader)})
        if not _running(pids):
            return []
        time.sleep(0.5)
    left = _running(pids)
    _signal_all(left, leaders, signal.SIGKILL)
    time.sleep(0.5)
    return left


def down(cfg: StackConfig, grace: float = 30) -> list[str]:
    """Stop what ``up`` started; returns the names of the parts that were running."""
    state_path = cfg.run_dir / STATE_FILE
    if not state_path.exists():
        return []
    state = json.loads(state_path.read_text())
    running = [p for p in state["processes"] if _alive(p)]
    killed = stop_processes([int(p["pid"]) for p in running], grace=grace)
    if killed:
        print(f"forced to kill {len(killed)} process(es) after {grace:.0f}s: {killed}")
    state_path.unlink()
    return [str(p["name"]) for p in running]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for the stack to be ready")
    args = parser.parse_args(argv)
    cfg = StackConfig.from_env()
    if args.command == "up":
        state = up(cfg, timeout=args.timeout)
        print(f"Airflow UI:     {state['airflow_url']}   (user admin)")
        print(f"admin password: in {state['password_file']}")
        if state["mlflow_url"]:
            print(f"MLflow UI:      {state['mlflow_url']}")
        print(f"Model page:     {state['airflow_url']}/plugin/mlops-models  (JSON: {state['airflow_url']}/mlops/api/models)")
        print(f"logs:           {cfg.run_dir}/*.log")
        print("stop with:      make down")
    elif args.command == "down":
        stopped = down(cfg)
        print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")
    else:
        state_path = cfg.run_dir / STATE_FILE
        if not state_path.exists():
            print("not running")
            return 1
        for p in json.loads(state_path.read_text())["processes"]:
            print(f"{p['name']}: pid {p['pid']} {'running' if _alive(p) else 'stopped'}  log {p['log']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
