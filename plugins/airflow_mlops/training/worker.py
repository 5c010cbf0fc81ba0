"""Entry point of one torchrun process: ``python -m airflow_mlops.training.worker --config <json>``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
import threading
import time


def _watch_parent(interval_s: float = 1.0) -> None:
    """Exit when the torchrun agent that started us is gone, so a hard-killed launcher leaves no orphans."""
    parent = os.getppid()
    if parent <= 1:
        return

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            if os.getppid() != parent:
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask Linux to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(1, int(sig), 0, 0, 0)) == 0  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return False


def root_cause(exc: BaseException) -> BaseException:
    """The innermost exception of a chain: what went wrong first."""
    seen = {id(exc)}
    while True:
        nxt = exc.__cause__ or exc.__context__
        if nxt is None or id(nxt) in seen:
            return exc
        seen.add(id(nxt))
        exc = nxt


def root_cause_line(exc: BaseException) -> str:
    """
    The first line of the root cause (``OSError: [Errno 28] No space left on device: ...``), followed by the
    package error that reported it when there is one (``StorageError: S3 upload failed for s3://...``).
    """
    from airflow_mlops.exceptions import MlopsError

    cause = root_cause(exc)
    line = f"{type(cause).__name__}: {(str(cause).strip().splitlines() or [''])[0]}"
    reporter = None
    current: BaseException | None = exc
    seen: set[int] = set()
    while current is not None and id(current) not in seen and current is not cause:
        seen.add(id(current))
        if isinstance(current, MlopsError):
            reporter = current  # the innermost package error wins
        current = current.__cause__ or current.__context__
    if reporter is not None:
        text = (str(reporter).strip().splitlines() or [""])[0]
        line += f" (reported as {type(reporter).__name__}: {text[:400]})"
    return line


def write_error_file(exc: BaseException, rank: int) -> None:
    """
    torchrun's per-rank error file (``TORCHELASTIC_ERROR_FILE``), in its format, with the root cause's first
    line and the failure time to the microsecond so the launcher can tell which rank failed first.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    import traceback

    data = {"message": {
        "message": f"{type(exc).__name__}: {exc}",
        "extraInfo": {"py_callstack": "".join(traceback.format_exception(exc)), "timestamp": str(int(time.time())),
                      "time": time.time(), "rank": rank, "root_cause": root_cause_line(exc)},
    }}
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
    except OSError:
        pass  # a full disk may refuse this too; the launcher falls back to the log lines


def _configure_logging(rank: int) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("airflow_mlops")
    root.handlers[:] = [handler]
    root.propagate = False
    # Other ranks speak only about trouble; rank 0 narrates.
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="path of the TrainingConfig JSON file")
    args = parser.parse_args(argv)
    rank = int(os.environ.get("RANK", "0"))
    _configure_logging(rank)
    # Die with the torchrun agent even when it is SIGKILLed (the watcher below is the fallback elsewhere).
    parent = os.getppid()
    set_parent_death_signal()
    if os.getppid() != parent:
        return 128 + signal.SIGTERM
    _watch_parent()
    print(f"worker rank {rank}/{os.environ.get('WORLD_SIZE', '1')} pid {os.getpid()} on {socket.gethostname()}",
          flush=True)

    from airflow_mlops.training.config import TrainingConfig
    from airflow_mlops.training.runtime import run

    with open(args.config, encoding="utf-8") as fh:
        config = TrainingConfig.from_dict(json.load(fh))
    try:
        run(config)
    except BaseException as exc:
        write_error_file(exc, rank)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
