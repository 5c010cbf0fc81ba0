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
    _watch_parent()
    print(f"worker rank {rank}/{os.environ.get('WORLD_SIZE', '1')} pid {os.getpid()} on {socket.gethostname()}",
          flush=True)

    from airflow_mlops.training.config import TrainingConfig
    from airflow_mlops.training.runtime import run

    with open(args.config, encoding="utf-8") as fh:
        config = TrainingConfig.from_dict(json.load(fh))
    run(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
