"""Faults at the level a user meets them: a TCP proxy that can refuse connections, process helpers, holders."""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class FlakyProxy:
    """
    A TCP proxy on 127.0.0.1 in front of a real server. :meth:`refuse` closes the listening socket and cuts
    every open connection, so clients get ``Connection refused`` / resets as from a server that went away;
    :meth:`restore` listens on the same port again.
    """

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition("//")[-1].rpartition(":")
        self.target = (host or "127.0.0.1", int(port.split("/")[0]))
        self.port = 0
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.refusing = False
        self.connections = 0
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), name="proxy-accept", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
                self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), name="proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            with self._lock:
                self._conns.difference_update((src, dst))

    def refuse(self) -> None:
        """The endpoint goes away: new connections are refused, open ones are reset."""
        self.refusing = True
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(); close alone does not
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    def restore(self) -> None:
        self._listen()
        self.refusing = False

    def outage(self, seconds: float) -> threading.Thread:
        """Refuse now and restore after ``seconds``, in the background."""
        self.refuse()

        def later() -> None:
            time.sleep(seconds)
            self.restore()

        thread = threading.Thread(target=later, name="proxy-outage", daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.refuse()


@contextmanager
def flaky_proxy(target: str) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()


# ---- processes --------------------------------------------------------------------------------------------
MARKER_ENV = "MLOPS_FAULT_MARKER"


def processes_with_marker(marker: str) -> list[int]:
    """Live (non-zombie) pids whose environment carries ``MLOPS_FAULT_MARKER=<marker>``."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if needle not in fh.read().split(b"\0"):
                    continue
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                if fh.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    continue
        except OSError:
            continue
        found.append(int(entry))
    return found


def wait_no_processes(marker: str, timeout_s: float = 10.0) -> tuple[list[int], float]:
    """Wait for every process carrying ``marker`` to be gone; (pids still alive, seconds waited)."""
    started = time.monotonic()
    while True:
        alive = processes_with_marker(marker)
        if not alive or time.monotonic() - started > timeout_s:
            return alive, time.monotonic() - started
        time.sleep(0.1)


def kill_marked(marker: str) -> None:
    for pid in processes_with_marker(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def python_subprocess(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT)


# ---- a registry lock holder in its own process ------------------------------------------------------------
def _hold_lock(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--ttl", type=float, required=True)
    parser.add_argument("--hold", type=float, required=True)
    parser.add_argument("--clock-skew", type=float, default=0.0, help="shift this process's wall clock")
    parser.add_argument("--wait", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.clock_skew:
        real = time.time
        time.time = lambda: real() + args.clock_skew  # type: ignore[assignment]
    from mlflow import MlflowClient

    from airflow_mlops.exceptions import LockLostError, LockTimeoutError
    from airflow_mlops.registry.lock import RegistryLock

    lock = RegistryLock(MlflowClient(args.url), args.name, f"holder-{os.getpid()}", ttl_s=args.ttl, wait_s=args.wait)
    try:
        lock.acquire()
    except LockTimeoutError as exc:
        print(f"TIMEOUT {exc}", flush=True)
        return 4
    print(f"HELD {lock.generation} {time.time()}", flush=True)
    time.sleep(args.hold)
    try:
        lock.release()
    except LockLostError as exc:
        print(f"LOST {exc}", flush=True)
        return 3
    print("RELEASED", flush=True)
    return 0


# ---- a training task in its own process --------------------------------------------------------------------
def _train(argv: list[str]) -> int:
    """What a task process does: run the launcher, print its lines (``--config``: TrainingConfig JSON)."""
    import json

    from airflow_mlops.training.config import TrainingConfig
    from airflow_mlops.training.launcher import TorchrunLauncher

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        config = TrainingConfig.from_dict(json.load(fh))
    result = TorchrunLauncher().run(config, log_line=lambda line: print(line, flush=True), timeout_s=300)
    print(f"RESULT {result.last_checkpoint_uri}", flush=True)
    return 0


def _train_dag(argv: list[str]) -> int:
    """``dag.test()`` of a one-task DAG whose operator trains with the given config JSON (``--config``)."""
    from airflow.dag_processing.dagbag import DagBag

    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    os.environ["MLOPS_FAULT_CONFIG"] = args.config
    # dag.test() runs DAGs of the configured bundle: the caller points AIRFLOW__CORE__DAGS_FOLDER at a folder
    # holding a copy of fault_dag.py.
    bag = DagBag(dag_folder=os.path.join(os.environ["AIRFLOW__CORE__DAGS_FOLDER"], "fault_dag.py"))
    assert not bag.import_errors, bag.import_errors
    run = bag.dags["fault_training"].test()
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    print(f"STATE {run.state} {states}", flush=True)
    return 0 if str(run.state) == "success" else 1


if __name__ == "__main__":
    if sys.argv[1:2] == ["train-dag"]:
        sys.exit(_train_dag(sys.argv[2:]))
    if sys.argv[1:2] == ["hold-lock"]:
        sys.exit(_hold_lock(sys.argv[2:]))
    if sys.argv[1:2] == ["train"]:
        sys.exit(_train(sys.argv[2:]))
    sys.exit(f"unknown command {sys.argv[1:2]}")
