"""Parse time of each reference DAG file against a DAG file that imports only airflow.sdk.

Each measurement is a fresh interpreter that has already imported airflow.sdk (as the dag processor has),
then times the import of one DAG file; the median of several runs is reported with its ratio to the baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BASELINE_DAG = '''
from __future__ import annotations
import pendulum
from airflow.sdk import DAG, Param
from airflow.providers.standard.operators.empty import EmptyOperator

with DAG(dag_id="baseline", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
         params={"epochs": Param(2, type="integer")}, tags=["baseline"]):
    a = EmptyOperator(task_id="a")
    b = EmptyOperator(task_id="b")
    a >> b
'''

PROBE = """
import sys, time, importlib.util
import airflow.sdk  # already loaded in the dag processor
from airflow.providers.standard.operators.empty import EmptyOperator  # noqa: F401
t0 = time.perf_counter()
spec = importlib.util.spec_from_file_location("bench_dag", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
print(time.perf_counter() - t0)
"""


def parse_seconds(path: Path, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        res = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, check=True,
                             cwd=REPO)
        out.append(float(res.stdout.strip().splitlines()[-1]))
    return out


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 runs instead of 7")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "parse.json"))
    args = parser.parse_args()
    if args.quick:
        args.runs = 3
    with tempfile.TemporaryDirectory() as tmp:
        base_file = Path(tmp) / "baseline_dag.py"
        base_file.write_text(BASELINE_DAG)
        base = statistics.median(parse_seconds(base_file, args.runs))
        heavy_file = Path(tmp) / "heavy_dag.py"
        heavy_file.write_text(BASELINE_DAG + "\nimport torch, mlflow, great_expectations, evidently  # noqa\n")
        heavy = statistics.median(parse_seconds(heavy_file, max(3, args.runs // 2)))
    rows = []
    for dag_file in sorted((REPO / "dags").glob("*.py")):
        times = parse_seconds(dag_file, args.runs)
        med = statistics.median(times)
        rows.append({"dag_file": dag_file.name, "median_s": med, "baseline_median_s": base, "ratio": med / base,
                     "runs": args.runs})
    rows.append({"dag_file": "(for scale) airflow.sdk DAG importing torch, mlflow, GX, evidently", "median_s": heavy,
                 "baseline_median_s": base, "ratio": heavy / base, "runs": max(3, args.runs // 2)})
    result = {"benchmark": "dag_parse_time", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print("| DAG file | median parse (ms) | airflow.sdk-only DAG (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['dag_file']} | {r['median_s'] * 1000:.1f} | {r['baseline_median_s'] * 1000:.1f} | {r['ratio']:.2f} |")
    return result


if __name__ == "__main__":
    main()
