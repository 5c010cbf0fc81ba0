"""Start the workers with torchrun on this host: command line, live rank-prefixed logs, timeout, clean kill."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import IO

from airflow_mlops.exceptions import TrainingError, explain
from airflow_mlops.hooks.storage import get_storage, is_s3
from airflow_mlops.training.config import TrainingConfig
from airflow_mlops.training.result import TrainingResult, read_result, result_uri

WORKER_MODULE = "airflow_mlops.training.worker"
CONFIG_FILE = "training_config.json"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_TEE_PREFIX = re.compile(r"^\[(?P<role>[A-Za-z_][\w-]*?)(?P<local>\d+)\]:(?P<rest>.*)$")
_WORKER_HELLO = re.compile(r"^worker rank (?P<rank>\d+)/\d+ pid (?P<pid>\d+)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def rdzv_id(config: TrainingConfig) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", config.run_name)[:120] or "training"


def build_torchrun_command(
    config: TrainingConfig,
    config_path: str,
    *,
    rdzv_endpoint: str | None = None,
    log_dir: str | None = None,
) -> list[str]:
    """
    The torchrun command line for this node: c10d rendezvous, no elastic restarts (Airflow retries instead),
    worker output teed with a per-rank prefix.

    The endpoint comes from the config, else from ``rdzv_endpoint``, else a free port on 127.0.0.1
    (single node only; the config validation requires an endpoint for several nodes).
    """
    endpoint = config.rdzv_endpoint or rdzv_endpoint or f"127.0.0.1:{free_port()}"
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(config.nnodes),
        "--nproc-per-node", str(config.nproc_per_node),
        "--node-rank", str(config.node_rank),
        "--rdzv-backend", "c10d",
        "--rdzv-endpoint", endpoint,
        "--rdzv-id", rdzv_id(config),
        "--max-restarts", "0",
        "--tee", "3",
    ]
    if endpoint.rsplit(":", 1)[0] in LOOPBACK:
        # Workers must meet on loopback too, not on whatever the host name resolves to.
        cmd += ["--local-addr", "127.0.0.1"]
    if log_dir:
        cmd += ["--log-dir", log_dir]
    cmd += ["-m", WORKER_MODULE, "--config", config_path]
    return cmd


def child_env(extra_env: dict[str, str] | None = None, pythonpath: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    paths = [os.path.abspath(p) for p in (pythonpath or []) if p]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    if paths:
        env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, set here to silence its banner
    return env


class TorchrunLauncher:
    """
    Runs torchrun for one node of a training run and waits for it.

    :param kill_grace_s: after SIGTERM, how long torchrun gets to stop its workers before SIGKILL.
    :param tail_lines: how many of the last log lines a :class:`TrainingError` quotes.
    """

    def __init__(self, kill_grace_s: float = 15.0, tail_lines: int = 40) -> None:
        self.kill_grace_s = kill_grace_s
        self.tail_lines = tail_lines
        self._proc: subprocess.Popen[bytes] | None = None
        self._worker_pids: dict[int, int] = {}
        self._killed = False
        self._lock = threading.Lock()

    @property
    def worker_pids(self) -> dict[int, int]:
        """Global rank -> pid of the workers started on this node, as they announced themselves."""
        return dict(self._worker_pids)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def run(
        self,
        config: TrainingConfig,
        log_line: Callable[[str], None] = print,
        timeout_s: float | None = None,
        extra_env: dict[str, str] | None = None,
        pythonpath: list[str] | None = None,
    ) -> TrainingResult:
        """Start torchrun, stream ``[rankN] ...`` lines to ``log_line``, and return the parsed result."""
        workdir = config.output_dir if not is_s3(config.output_dir) else tempfile.mkdtemp(prefix="training-")
        os.makedirs(workdir, exist_ok=True)
        config_path = os.path.join(workdir, CONFIG_FILE)
        with open(config_path, "w", encoding="utf-8") as fh:
            json.dump(config.to_dict(), fh, indent=1)
        result_storage = get_storage(result_uri(config.output_dir))
        if result_storage.exists(result_uri(config.output_dir)):
            result_storage.delete(result_uri(config.output_dir))  # never report a previous attempt's result
        cmd = build_torchrun_command(config, config_path, log_dir=os.path.join(workdir, "torchrun-logs"))
        tail: collections.deque[str] = collections.deque(maxlen=self.tail_lines)
        self._killed = False
        self._worker_pids = {}
        base_rank = config.node_rank * config.nproc_per_node
        log_line(f"[launcher] {' '.join(cmd)}")
        with self._lock:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=child_env(extra_env, pythonpath),
                start_new_session=True,  # its own process group, so kill() reaches torchrun and nothing else
            )
        proc = self._proc
        assert proc.stdout is not None
        reader = threading.Thread(target=self._pump, args=(proc.stdout, log_line, tail, base_rank),
                                  name="torchrun-log", daemon=True)
        reader.start()
        started = time.monotonic()
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            reader.join(timeout=5)
            raise TrainingError(
                explain("Training timed out and was stopped", expected=f"done within {timeout_s}s",
                        received=f"still running after {time.monotonic() - started:.0f}s",
                        hint="raise the timeout, lower epochs, or add processes. Last lines:\n" + "\n".join(tail))
            ) from None
        except BaseException:
            self.kill()
            raise
        reader.join(timeout=10)
        if self._killed:
            raise TrainingError(explain("Training was stopped", expected="a finished run", received=f"exit code {rc}"))
        if rc != 0:
            raise TrainingError(
                explain("torchrun failed", expected="exit code 0", received=rc,
                        hint="the last worker lines follow; an Airflow retry resumes from the last committed "
                        "checkpoint.\n" + "\n".join(tail))
            )
        return read_result(config.output_dir)

    def _pump(self, stream: IO[bytes], log_line: Callable[[str], None], tail: collections.deque[str],
              base_rank: int) -> None:
        local_to_global: dict[int, int] = {}
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
            match = _TEE_PREFIX.match(text)
            if match:
                local = int(match.group("local"))
                rest = match.group("rest")
                hello = _WORKER_HELLO.match(rest)
                if hello:
                    local_to_global[local] = int(hello.group("rank"))
                    self._worker_pids[int(hello.group("rank"))] = int(hello.group("pid"))
                line = f"[rank{local_to_global.get(local, base_rank + local)}] {rest}"
            else:
                line = f"[torchrun] {text}"
            tail.append(line)
            try:
                log_line(line)
            except Exception:  # noqa: BLE001 - a broken log sink must not hang the workers on a full pipe
                pass
        stream.close()

    def kill(self) -> None:
        """End torchrun and its workers: SIGTERM to its group, SIGKILL after the grace period, no orphans."""
        proc = self._proc
        if proc is None:
            return
        self._killed = True
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=self.kill_grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        # torchrun starts each worker in its own session: make sure none outlived the agent.
        for pid in self._worker_pids.values():
            if _alive(pid):
                _signal_group(pid, signal.SIGKILL)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
