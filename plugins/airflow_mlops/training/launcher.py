"""Start the workers with torchrun on this host: command line, live rank-prefixed logs, timeout, clean kill."""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from airflow_mlops.checkpoints.manager import LEASE_ENV, claim_lease
from airflow_mlops.exceptions import TrainingError, explain
from airflow_mlops.hooks.storage import get_storage, is_s3, s3_client_kwargs_from_env
from airflow_mlops.training.config import TrainingConfig
from airflow_mlops.training.result import TrainingResult, read_result, result_uri
from airflow_mlops.training.worker import set_parent_death_signal

WORKER_MODULE = "airflow_mlops.training.worker"
CONFIG_FILE = "training_config.json"
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
_TEE_PREFIX = re.compile(r"^\[(?P<role>[A-Za-z_][\w-]*?)(?P<local>\d+)\]:(?P<rest>.*)$")
_WORKER_HELLO = re.compile(r"^worker rank (?P<rank>\d+)/\d+ pid (?P<pid>\d+)")
#: Every process of a try carries this variable (run and node), so a later try finds and stops leftovers.
RUN_MARKER_ENV = "MLOPS_TRAINING_RUN"
TRY_DIR_PREFIX = "mlops-try-"
_OWNER_FILE = ".owner.json"


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


def run_marker(config: TrainingConfig) -> str:
    """Names one node of one run across its tries: the run, the node, and the checkpoint folder."""
    digest = hashlib.sha256(config.checkpoint_dir.encode("utf-8")).hexdigest()[:12]
    return f"{rdzv_id(config)}/node{config.node_rank}/{digest}"


# ---- processes of earlier tries ---------------------------------------------------------------------------
def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, it names one process for good."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            fields = fh.read().rsplit(")", 1)[-1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def marked_processes(marker: str) -> list[int]:
    """Live processes on this host whose environment carries ``MLOPS_TRAINING_RUN=<marker>`` (Linux /proc)."""
    needle = f"{RUN_MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
        except OSError:
            continue
        if _start_ticks(int(entry)) is not None:
            found.append(int(entry))
    return found


def stop_earlier_tries(marker: str, timeout_s: float = 15.0) -> list[int]:
    """SIGKILL processes left by an earlier try of this run and node, and wait until they are gone."""
    stale = marked_processes(marker)
    for pid in stale:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout_s
    while stale and marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = marked_processes(marker)
    if left:
        raise TrainingError(explain("Processes of an earlier try of this run do not stop",
                                    expected="none left after SIGKILL", received=left,
                                    hint="they may be stuck in the kernel (I/O); check the host."))
    return stale


# ---- temporary folders of tries ---------------------------------------------------------------------------
def _try_dir_alive(path: str) -> bool:
    try:
        with open(os.path.join(path, _OWNER_FILE), encoding="utf-8") as fh:
            owner = json.load(fh)
    except (OSError, ValueError):
        # Being created right now, or not ours to judge: only folders older than a minute count as left over.
        try:
            return time.time() - os.path.getmtime(path) < 60
        except OSError:
            return False
    if owner.get("host") != socket.gethostname():
        return True  # another container sharing the folder: its processes are not ours to judge
    return _start_ticks(int(owner.get("pid", -1))) == owner.get("start")


def clean_stale_try_dirs(base: str | None = None) -> list[str]:
    """Remove temporary folders of tries whose process is gone (a SIGKILLed task leaves its folder behind)."""
    removed = []
    for path in glob.glob(os.path.join(base or tempfile.gettempdir(), f"{TRY_DIR_PREFIX}*")):
        if os.path.isdir(path) and not _try_dir_alive(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def make_try_dir(base: str | None = None) -> str:
    """A temporary folder that names its owner process, so the next try can tell it was left behind."""
    path = tempfile.mkdtemp(prefix=TRY_DIR_PREFIX, dir=base)
    with open(os.path.join(path, _OWNER_FILE), "w", encoding="utf-8") as fh:
        json.dump({"pid": os.getpid(), "start": _start_ticks(os.getpid()), "host": socket.gethostname()}, fh)
    return path


@contextmanager
def try_tempdir(base: str | None = None) -> Iterator[str]:
    """Like ``tempfile.TemporaryDirectory``, and the folders of killed earlier tries are removed first."""
    clean_stale_try_dirs(base)
    path = make_try_dir(base)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- the failing rank's own error -------------------------------------------------------------------------
def first_failure(log_dir: str, base_rank: int = 0) -> tuple[int, str] | None:
    """
    ``(rank, first line of its root-cause exception)`` of the rank that failed first, from torchrun's
    per-rank error files (``<log_dir>/<run>/attempt_<n>/<local_rank>/error.json``).
    """
    found: list[tuple[float, int, str]] = []
    for path in glob.glob(os.path.join(log_dir, "**", "error.json"), recursive=True):
        try:
            with open(path, encoding="utf-8") as fh:
                data: Any = json.load(fh)
        except (OSError, ValueError):
            continue
        message = data.get("message") if isinstance(data, dict) else None
        local = os.path.basename(os.path.dirname(path))
        rank = base_rank + int(local) if local.isdigit() else -1
        if isinstance(message, str):
            line, when = message, float(data.get("timestamp", 0) or 0)
        elif isinstance(message, dict):
            extra = message.get("extraInfo") or {}
            line = str(extra.get("root_cause") or message.get("message") or "")
            when = float(extra.get("time") or extra.get("timestamp") or 0)
            rank = int(extra.get("rank", rank))
        else:
            continue
        found.append((when, rank, (line.strip().splitlines() or [""])[0]))
    if not found:
        return None
    _when, rank, line = min(found)
    return rank, line


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
        """
        Start torchrun, stream ``[rankN] ...`` lines to ``log_line``, and return the parsed result.

        Before starting, processes of an earlier try of this run and node that still live are stopped, the
        folders of killed tries are removed, and (on node 0) the checkpoint folder's lease is taken, so a
        writer of an earlier try elsewhere can no longer commit there. torchrun and its workers die with
        this process, even when it is SIGKILLed (Linux parent-death signal).
        """
        marker = run_marker(config)
        stale = stop_earlier_tries(marker)
        if stale:
            log_line(f"[launcher] stopped {len(stale)} process(es) of an earlier try still running: {stale}")
        removed = clean_stale_try_dirs()
        if removed:
            log_line(f"[launcher] removed {len(removed)} temporary folder(s) of killed tries")
        try_dir = make_try_dir()
        try:
            return self._run(config, try_dir, marker, log_line, timeout_s, extra_env, pythonpath)
        finally:
            shutil.rmtree(try_dir, ignore_errors=True)

    def _run(
        self,
        config: TrainingConfig,
        try_dir: str,
        marker: str,
        log_line: Callable[[str], None],
        timeout_s: float | None,
        extra_env: dict[str, str] | None,
        pythonpath: list[str] | None,
    ) -> TrainingResult:
        workdir = try_dir if is_s3(config.output_dir) else config.output_dir
        os.makedirs(workdir, exist_ok=True)
        config_path = os.path.join(workdir, CONFIG_FILE)
        with open(config_path, "w", encoding="utf-8") as fh:
            json.dump(config.to_dict(), fh, indent=1)
        env = child_env(extra_env, pythonpath)
        s3_kwargs = s3_client_kwargs_from_env(env)  # this process reaches the stores as the workers do
        result_storage = get_storage(result_uri(config.output_dir), s3_kwargs)
        if result_storage.exists(result_uri(config.output_dir)):
            result_storage.delete(result_uri(config.output_dir))  # never report a previous attempt's result
        # Workers' temporary files (S3 staging, downloads) live in the try's folder: one place to clean.
        env.update({RUN_MARKER_ENV: marker, "TMPDIR": try_dir})
        if config.node_rank == 0:
            env[LEASE_ENV] = claim_lease(config.checkpoint_dir, owner=f"{marker}@{socket.gethostname()}:{os.getpid()}",
                                         storage=get_storage(config.checkpoint_dir, s3_kwargs))
        log_dir = os.path.join(try_dir, "torchrun-logs")
        cmd = build_torchrun_command(config, config_path, log_dir=log_dir)
        tail: collections.deque[str] = collections.deque(maxlen=self.tail_lines)
        self._killed = False
        self._worker_pids = {}
        base_rank = config.node_rank * config.nproc_per_node
        log_line(f"[launcher] {' '.join(cmd)}")
        parent = os.getpid()

        def die_with_parent() -> None:
            set_parent_death_signal(signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(1)

        with self._lock:
            self._proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # its own process group, so kill() reaches torchrun and nothing else
                preexec_fn=die_with_parent,  # noqa: PLW1509 - only a prctl call between fork and exec
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
            failure = first_failure(log_dir, base_rank)
            problem = "torchrun failed" if failure is None else (
                f"torchrun failed: rank {failure[0]} failed first with {failure[1]}")
            raise TrainingError(
                explain(problem, expected="exit code 0", received=rc,
                        hint="the last worker lines follow; an Airflow retry resumes from the last committed "
                        "checkpoint.\n" + "\n".join(tail))
            )
        return read_result(config.output_dir, result_storage)

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
