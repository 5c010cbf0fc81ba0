"""Run every benchmark (benchmarks/bench_*.py) and write benchmarks/results/RESULTS.md.

    python benchmarks/run.py            # all, full size
    python benchmarks/run.py --quick    # smaller inputs, for a quick look
    python benchmarks/run.py parse      # one benchmark by name
    python benchmarks/run.py scale      # tables larger than memory: 10M x 50, about an hour on two cores

The scale benchmark runs only when named (or with --all): it generates about 8 GB of Parquet.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
#: Benchmarks that run only when named or with --all (long, large inputs).
ON_REQUEST = {"scale"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (parse, validation, training, drift, scale)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--all", action="store_true", help="also the benchmarks run only on request (scale)")
    args = parser.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.names:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.names]
    elif not args.all:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") not in ON_REQUEST]
    RESULTS.mkdir(exist_ok=True)
    sections = [
        "# Benchmark results",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {platform.node()} "
        f"({platform.machine()}, Python {platform.python_version()}). Medians of several runs; ratios compare "
        "this project with the bare library doing the same work in the same run.",
        "",
    ]
    failed = []
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        cmd = [sys.executable, str(script), "--out", str(RESULTS / f"{name}.json")]
        if args.quick:
            cmd.append("--quick")
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        print(proc.stdout[-4000:], flush=True)
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-4000:], file=sys.stderr)
            (RESULTS / f"{name}.md").write_text(f"## {name}\n\nFAILED (exit {proc.returncode})\n")
            continue
        table = [line for line in proc.stdout.splitlines() if line.startswith("|")]
        notes = [line for line in proc.stdout.splitlines() if line.startswith("> ")]
        stamp = f"_{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC{' (--quick)' if args.quick else ''}_"
        section = [f"## {name}", "", (script.read_text().split('"""')[1].strip().splitlines() or [""])[0], "",
                   stamp, "", *table, "", *notes, ""]
        (RESULTS / f"{name}.md").write_text("\n".join(section) + "\n")
    # Benchmarks not run this time keep their last section.
    for part in sorted(RESULTS.glob("*.md")):
        if part.name != "RESULTS.md":
            sections.append(part.read_text())
    (RESULTS / "RESULTS.md").write_text("\n".join(sections) + "\n")
    print(f"wrote {RESULTS / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
