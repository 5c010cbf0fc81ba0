"""Shared by the data set builders: the table written atomically as Parquet, and the command line."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_parquet(df: Any, out: str | Path) -> Path:
    """``df`` at ``out``, written beside it first and renamed, so a reader never sees half a table."""
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out_path)
    return out_path


def run(build: Callable[[str], Any], doc: str, default_out: str) -> int:
    """The builder's command line: ``--out`` (default ``default_out``); prints where the table is."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=default_out)
    print(build(parser.parse_args().out))
    return 0
