"""Data validation: this project's validation path against GX's own run of the same suite on the same DataFrame.

Both sides validate one in-memory DataFrame (1,000,000 rows x 20 columns by default) against the same
32-expectation suite with the same result format, in the same process, alternating runs; the median of each
side and their ratio are reported (target: ratio <= 1.15). Import time is measured apart, in fresh
interpreters. Peak extra memory of one run of each side is measured with tracemalloc in a subprocess.
The end-to-end service path (read a Parquet file, sha256, parse, validate, summarise) is reported for
information.

    python benchmarks/bench_validation.py --out benchmarks/results/validation.json
    python benchmarks/bench_validation.py --quick
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.15
N_FEATURES = 16
REGIONS = ["north", "south", "east", "west"]
RESULT_FORMAT = {"result_format": "SUMMARY", "partial_unexpected_count": 5}


def make_frame(rows: int, seed: int = 0) -> Any:
    """20 columns: an increasing id, 16 float features, an int code, a string region and a 0/1 label."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    cols: dict[str, Any] = {"id": np.arange(rows, dtype="int64")}
    for i in range(N_FEATURES):
        cols[f"f{i:02d}"] = rng.standard_normal(rows)
    cols["code"] = rng.integers(0, 5, rows)
    cols["region"] = np.array(REGIONS, dtype=object)[rng.integers(0, len(REGIONS), rows)]
    cols["label"] = rng.integers(0, 2, rows)
    return pd.DataFrame(cols)


def make_suite(rows: int) -> dict[str, Any]:
    """32 expectations of the kinds a data contract uses: schema, row count, nulls, ranges, sets, keys, types."""
    columns = ["id"] + [f"f{i:02d}" for i in range(N_FEATURES)] + ["code", "region", "label"]

    def e(type_: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": type_, "kwargs": kwargs, "meta": {}}

    exps = [e("expect_table_columns_to_match_ordered_list", column_list=columns),
            e("expect_table_row_count_to_be_between", min_value=1, max_value=10 * rows)]
    exps += [e("expect_column_values_to_not_be_null", column=c)
             for c in ["id", "f00", "f01", "f02", "f03", "f04", "f05", "code", "region", "label"]]
    exps += [e("expect_column_values_to_be_between", column=f"f{i:02d}", min_value=-10.0, max_value=10.0)
             for i in range(12)]
    exps += [e("expect_column_values_to_be_in_set", column="code", value_set=[0, 1, 2, 3, 4]),
             e("expect_column_values_to_be_in_set", column="region", value_set=REGIONS),
             e("expect_column_values_to_be_in_set", column="label", value_set=[0, 1]),
             e("expect_column_values_to_be_unique", column="id"),
             e("expect_column_values_to_be_increasing", column="id", strictly=True),
             e("expect_column_values_to_be_in_type_list", column="f13", type_list=["float64"]),
             e("expect_column_values_to_be_in_type_list", column="label", type_list=["int64"]),
             e("expect_column_values_to_be_in_type_list", column="region", type_list=["str"])]
    return {"name": "bench", "expectations": exps}


def gx_run(df: Any, suite: dict[str, Any]) -> bool:
    """GX alone: ephemeral context, suite from the same dicts, DataFrame batch, ``batch.validate``."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    gx_suite = gx.ExpectationSuite(name=suite["name"], expectations=[dict(x) for x in suite["expectations"]])
    batch = (context.data_sources.add_pandas("bare").add_dataframe_asset("df")
             .add_batch_definition_whole_dataframe("all").get_batch(batch_parameters={"dataframe": df}))
    return bool(batch.validate(gx_suite, result_format=RESULT_FORMAT).success)


def ours_run(df: Any, suite: dict[str, Any]) -> bool:
    """This project: checked suite build, the same GX run, GX result to JSON, severity-aware summary."""
    from airflow_mlops.validation.service import validate_frame

    summary, _ = validate_frame(df, suite, max_examples=5)
    return bool(summary["success"])


SIDES = {"gx": gx_run, "ours": ours_run}


def import_seconds(module: str, runs: int) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                  cwd=REPO).stdout.split()[-1]) for _ in range(runs)]
    return statistics.median(times)


def memory_child(side: str, rows: int) -> None:
    """In a subprocess: peak bytes allocated during one validation (tracemalloc, numpy buffers included)."""
    import tracemalloc

    df, suite = make_frame(rows), make_suite(rows)
    SIDES[side](df.head(100), suite)  # load GX and the expectation registry outside the measured window
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    ok = SIDES[side](df, suite)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()
    print(json.dumps({"side": side, "peak_bytes": peak, "success": ok}))


def peak_memory(side: str, rows: int) -> int:
    res = subprocess.run([sys.executable, __file__, "--memory-child", side, "--rows", str(rows)],
                         capture_output=True, text=True, check=True, cwd=REPO)
    return int(json.loads(res.stdout.strip().splitlines()[-1])["peak_bytes"])


def end_to_end(df: Any, suite: dict[str, Any], runs: int) -> dict[str, float]:
    from airflow_mlops.validation.service import ValidationConfig, ValidationService

    with tempfile.TemporaryDirectory() as tmp:
        data, suite_path = Path(tmp) / "batch.parquet", Path(tmp) / "suite.json"
        df.to_parquet(data, index=False)
        suite_path.write_text(json.dumps(suite))
        service, config = ValidationService(), ValidationConfig(str(data), str(suite_path), allowed_root=tmp)
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            assert service.validate(config).success
            times.append(time.perf_counter() - t)
        return {"median_s": statistics.median(times), "file_mb": data.stat().st_size / 2**20}


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100,000 rows and 3 repeats")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "validation.json"))
    parser.add_argument("--memory-child", choices=sorted(SIDES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.rows)
        return {}
    if args.quick:
        args.rows, args.repeats = min(args.rows, 100_000), 3

    imports = {"great_expectations": import_seconds("great_expectations", 3),
               "airflow_mlops.operators.validation": import_seconds("airflow_mlops.operators.validation", 3)}
    df, suite = make_frame(args.rows), make_suite(args.rows)
    for fn in SIDES.values():  # warm-up: GX import and first-use costs stay out of the timings
        assert fn(df.head(1000), suite)
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for i in range(args.repeats):
        order = list(SIDES) if i % 2 == 0 else list(SIDES)[::-1]  # alternate to cancel drift on a shared host
        for side in order:
            t = time.perf_counter()
            assert SIDES[side](df, suite), f"{side} reported a failure on valid data"
            times[side].append(time.perf_counter() - t)
    med = {side: statistics.median(ts) for side, ts in times.items()}
    e2e = end_to_end(df, suite, max(1, args.repeats // 2))
    peaks = {side: peak_memory(side, args.rows) for side in SIDES}
    ratio = med["ours"] / med["gx"]
    result = {
        "benchmark": "validation",
        "rows": args.rows,
        "columns": int(df.shape[1]),
        "expectations": len(suite["expectations"]),
        "repeats": args.repeats,
        "import_s": imports,
        "time_s": {side: {"median": med[side], "runs": times[side]} for side in SIDES},
        "ratio": ratio,
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "end_to_end_from_parquet": e2e,
        "peak_extra_bytes": peaks,
        "memory_ratio": peaks["ours"] / peaks["gx"] if peaks["gx"] else None,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    mib = 2**20
    print(f"Validation of {args.rows:,} rows x {df.shape[1]} columns, {len(suite['expectations'])} expectations, "
          f"median of {args.repeats} alternating runs.\n")
    print("| path | median (s) | ratio to GX | peak extra memory (MiB) |")
    print("|---|---:|---:|---:|")
    print(f"| GX `batch.validate` (same suite, same DataFrame) | {med['gx']:.3f} | 1.00 | {peaks['gx'] / mib:.0f} |")
    print(f"| airflow-mlops `validate_frame` (suite check + GX run + summary) | {med['ours']:.3f} | {ratio:.3f} | "
          f"{peaks['ours'] / mib:.0f} |")
    print(f"| airflow-mlops service from a {e2e['file_mb']:.0f} MiB Parquet file (read + sha256 + parse + "
          f"validate + summary) | {e2e['median_s']:.3f} | {e2e['median_s'] / med['gx']:.3f} | - |")
    print(f"\nImport (fresh interpreter, median of 3): `import great_expectations` "
          f"{imports['great_expectations']:.2f} s; `import airflow_mlops.operators.validation` "
          f"{imports['airflow_mlops.operators.validation']:.2f} s (GX is imported on first validation only).")
    print(f"\nTarget ratio <= {TARGET_RATIO}: {'met' if result['meets_target'] else 'NOT met'} ({ratio:.3f}).")
    return result


if __name__ == "__main__":
    main()
