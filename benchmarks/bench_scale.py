"""Tables larger than memory: streaming vs in-memory vs the bare libraries, validation and drift, 10M x 50.

A reference and a current window of 50 columns (an id, 44 float features, 4 small integer codes, a string
region) are generated to Parquet in 500,000-row pieces; the current window carries known shifts (means of
f00-f04, spread of f05-f07, the distributions of c0 and region) and known defects (out-of-range values in
f10, nulls in f11, a repeated id). Every path runs in its own subprocess; wall time and peak RSS
(``ru_maxrss`` of that child, from ``os.wait4``) are measured there. Verdicts per expectation and per
column are compared with the in-memory path wherever both run. Streaming runs at every size (the RSS curve);
in-memory paths up to ``--in-memory-max`` rows; the bare libraries (GX on a DataFrame, Evidently's Report)
at the smallest size. The largest table within 4 GiB is extrapolated from the RSS curves (a straight line
fitted to peak RSS against rows); streaming's curve is flat, its limit is the disk.

    python benchmarks/bench_scale.py --out benchmarks/results/scale.json             # 1M, 5M, 10M
    python benchmarks/bench_scale.py --quick                                         # 100k, 200k
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins"))
N_FLOAT = 44
N_CODES = 4
REGIONS = ["north", "south", "east", "west"]
PIECE = 500_000
LIMIT_BYTES = 4 * 1024**3
SHIFTED = [f"f{i:02d}" for i in range(8)] + ["c0", "region"]


def columns() -> list[str]:
    return ["id"] + [f"f{i:02d}" for i in range(N_FLOAT)] + [f"c{i}" for i in range(N_CODES)] + ["region"]


def generate(path: Path, rows: int, seed: int, shifted: bool) -> None:
    """Write a window piece by piece (never the whole table in memory)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = path.with_suffix(".tmp")
    writer = None
    for start in range(0, rows, PIECE):
        n = min(PIECE, rows - start)
        rng = np.random.default_rng([seed, start])
        cols: dict[str, Any] = {"id": np.arange(start, start + n, dtype="int64")}
        for i in range(N_FLOAT):
            x = rng.standard_normal(n)
            if shifted and i < 5:
                x += 0.5
            elif shifted and i < 8:
                x *= 1.5
            cols[f"f{i:02d}"] = x
        for i in range(N_CODES):
            p = [0.4, 0.3, 0.2, 0.1, 0.0] if (shifted and i == 0) else [0.2] * 5
            cols[f"c{i}"] = rng.choice(5, n, p=p)
        p = [0.7, 0.1, 0.1, 0.1] if shifted else [0.25] * 4
        cols["region"] = np.array(REGIONS, dtype=object)[rng.choice(4, n, p=p)]
        df = pd.DataFrame(cols)
        if shifted:
            df.loc[df.index[::100_000], "f10"] = 50.0  # out of range
            df.loc[df.index[5::50_000], "f11"] = np.nan  # nulls
            if start == 0:
                df.loc[1, "id"] = 0  # a repeated id (and a decrease)
        table = pa.Table.from_pandas(df, preserve_index=False)
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=PIECE)
    writer.close()
    os.replace(tmp, path)


def suite(rows: int) -> dict[str, Any]:
    """62 expectations: schema, row count, nulls, ranges, sets, types, and whole-column ones of every plan."""
    def e(type_: str, **kwargs: Any) -> dict[str, Any]:
        return {"type": type_, "kwargs": kwargs, "meta": {}}

    exps = [e("expect_table_columns_to_match_ordered_list", column_list=columns()),
            e("expect_table_row_count_to_be_between", min_value=1, max_value=2 * rows)]
    exps += [e("expect_column_values_to_not_be_null", column=c) for c in ["id"] + [f"f{i:02d}" for i in range(8, 24)]]
    exps += [e("expect_column_values_to_be_between", column=f"f{i:02d}", min_value=-10.0, max_value=10.0)
             for i in range(8, 24)]
    exps += [e("expect_column_values_to_be_in_set", column=f"c{i}", value_set=[0, 1, 2, 3, 4]) for i in range(4)]
    exps += [e("expect_column_values_to_be_in_set", column="region", value_set=REGIONS)]
    exps += [e("expect_column_values_to_be_in_type_list", column=c, type_list=[t]) for c, t in
             [("id", "int64"), ("f00", "float64"), ("c0", "int64"), ("region", "str")]]
    exps += [e("expect_column_values_to_be_unique", column="id"),
             e("expect_column_values_to_be_increasing", column="id", strictly=True),
             e("expect_column_proportion_of_unique_values_to_be_between", column="c1", max_value=0.01)]
    exps += [e("expect_column_mean_to_be_between", column=c, min_value=-0.1, max_value=0.1) for c in ("f00", "f20")]
    exps += [e("expect_column_stdev_to_be_between", column=c, min_value=0.9, max_value=1.1) for c in ("f05", "f21")]
    exps += [e("expect_column_min_to_be_between", column="f22", min_value=-10),
             e("expect_column_max_to_be_between", column="f10", max_value=10),
             e("expect_column_median_to_be_between", column="f01", min_value=-0.1, max_value=0.1),
             e("expect_column_quantile_values_to_be_between", column="f23", quantile_ranges={
                 "quantiles": [0.05, 0.5, 0.95], "value_ranges": [[-1.8, -1.5], [-0.1, 0.1], [1.5, 1.8]]})]
    return {"name": "scale", "expectations": exps}


# --- workers (each runs in its own process) ---------------------------------------------------------------------


def _verdicts(result_json: dict[str, Any]) -> dict[str, bool]:
    from airflow_mlops.validation.summary import expectation_key

    out: dict[str, bool] = {}
    for item in result_json["results"]:
        cfg = dict(item["expectation_config"])
        cfg["kwargs"] = {k: v for k, v in cfg["kwargs"].items() if k != "batch_id"}
        key = expectation_key(cfg)
        out[key if key not in out else key + "#2"] = bool(item["success"])
    return out


def worker(kind: str, args: list[str]) -> dict[str, Any]:
    if kind in ("validate-streaming", "validate-pandas", "validate-spark"):
        from airflow_mlops.validation.service import ValidationConfig, ValidationService

        path, suite_path = args
        engine = kind.split("-")[1]
        outcome = ValidationService().validate(ValidationConfig(data_path=path, suite_path=suite_path, engine=engine,
                                                                 allowed_root=str(Path(path).parent)))
        s = outcome.summary
        return {"rows": s["rows"], "verdicts": _verdicts(outcome.result.to_json_dict()),
                "unexpected_counts": s["unexpected_counts"], "failed": s["failed"],
                "messages": sorted(f["expectation"] + " " + str(f["observed_value"]) for f in s["failures"])}
    if kind == "validate-bare-gx":
        import great_expectations as gx
        import pandas as pd

        from airflow_mlops.validation.suites import build_gx_suite

        path, suite_path = args
        df = pd.read_parquet(path)
        context = gx.get_context(mode="ephemeral")
        batch = (context.data_sources.add_pandas("bare").add_dataframe_asset("t")
                 .add_batch_definition_whole_dataframe("w").get_batch(batch_parameters={"dataframe": df}))
        result = batch.validate(build_gx_suite(json.loads(Path(suite_path).read_text())),
                                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5})
        return {"rows": len(df), "verdicts": _verdicts(result.to_json_dict())}
    if kind in ("drift-streaming", "drift-spark"):
        from airflow_mlops.drift.report import DriftConfig
        from airflow_mlops.drift.scale import detect_drift_files

        ref, cur = args
        result, _ = detect_drift_files(ref, cur, DriftConfig(mode="profile"), kind.split("-")[1], render=False)
        s = result.summary
        return {"rows": s.current_rows, "verdicts": s.verdicts(), "scores": {c.column: c.score for c in s.columns}}
    if kind in ("drift-pandas-profile", "drift-pandas-full"):
        import pandas as pd

        from airflow_mlops.drift.report import DriftConfig, detect_drift

        ref, cur = pd.read_parquet(args[0]), pd.read_parquet(args[1])
        mode = kind.rsplit("-", 1)[1]
        s = detect_drift(ref, cur, DriftConfig(mode=mode), render=False).summary
        return {"rows": len(cur), "verdicts": s.verdicts(), "scores": {c.column: c.score for c in s.columns}}
    if kind == "drift-bare-evidently":
        import pandas as pd
        from evidently import Report
        from evidently.presets import DataDriftPreset

        ref, cur = pd.read_parquet(args[0]), pd.read_parquet(args[1])
        snap = Report(metrics=[DataDriftPreset()], include_tests=True).run(current_data=cur, reference_data=ref).dict()
        out = {}
        for test in snap.get("tests") or []:
            params = (test.get("metric_config") or {}).get("params") or {}
            if str(params.get("type", "")).endswith(":ValueDrift"):
                status = test.get("status")
                out[params["column"]] = str(getattr(status, "value", status)).upper().endswith("FAIL")
        return {"rows": len(cur), "verdicts": out}
    raise SystemExit(f"unknown worker {kind}")


def run_child(kind: str, args: list[str], timeout: float, limit_as: int | None = None) -> dict[str, Any]:
    """One path in a fresh interpreter: its wall time, its own peak RSS (os.wait4) and its answer; with
    ``limit_as`` the child's address space is capped (RLIMIT_AS, stricter than RSS: mapped, not only touched)."""
    out_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-scale-{os.getpid()}-{kind}.json"
    cmd = [sys.executable, __file__, "--worker", kind, "--result", str(out_file), *args]
    started = time.perf_counter()
    def cap() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=cap if limit_as else None)
    deadline = started + timeout
    status = rusage = None
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = -9
            break
        time.sleep(0.2)
    wall = time.perf_counter() - started
    stderr = proc.stderr.read() if proc.stderr else ""
    rc = os.waitstatus_to_exitcode(status) if proc.returncode is None else proc.returncode
    rec: dict[str, Any] = {"path": kind, "wall_s": round(wall, 2), "peak_rss_mib": round(rusage.ru_maxrss / 1024, 1),
                           "rc": rc}
    if rc == 0 and out_file.exists():
        rec.update(json.loads(out_file.read_text()))
        out_file.unlink()
    else:
        rec["error"] = "timed out" if rc == -9 else stderr.strip().splitlines()[-1:] or [f"exit {rc}"]
    if limit_as:
        rec["limit_as_gib"] = limit_as / 1024**3
    print(f"  {kind:24s} {rec['wall_s']:8.1f} s {rec['peak_rss_mib']:9.0f} MiB  rc={rc}"
          f"{'  (under a 4 GiB address-space limit)' if limit_as else ''}", flush=True)
    return rec


def fit_limit(points: list[tuple[int, float]]) -> dict[str, Any]:
    """Rows at which a straight line through (rows, peak RSS MiB) reaches 4 GiB; None when RSS does not grow."""
    if len(points) < 2:
        return {"rows_at_4gib": None, "mib_per_million_rows": None}
    import numpy as np

    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    slope, intercept = np.polyfit(x, y, 1)
    per_million = slope * 1e6
    if per_million < 5:  # flat: bounded by the chunk, not the table
        return {"rows_at_4gib": None, "mib_per_million_rows": round(per_million, 1), "bounded": True}
    return {"rows_at_4gib": int((LIMIT_BYTES / 1024**2 - intercept) / slope),
            "mib_per_million_rows": round(per_million, 1), "bounded": False}


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    va, vb = a.get("verdicts") or {}, b.get("verdicts") or {}
    diff = sorted(k for k in set(va) | set(vb) if va.get(k) != vb.get(k))
    return {"equal": not diff and bool(va), "compared": len(va), "different": diff}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sizes", default=None, help="rows, comma separated (default 1M,5M,10M)")
    parser.add_argument("--in-memory-max", type=int, default=None, help="largest size the in-memory paths run at")
    parser.add_argument("--spark", action="store_true", help="also run the Spark engine at the smallest size")
    parser.add_argument("--data-dir", default=os.environ.get("BENCH_SCALE_DIR", "/tmp/airflow-mlops-bench-scale"))
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--reuse", default=None, help="a former result JSON: its runs are kept, not repeated")
    parser.add_argument("--rerun", default="", help="with --reuse, runs to repeat anyway: kind@rows,...")
    parser.add_argument("--limit-runs", action="store_true",
                        help="also run the streaming paths at the largest size, and the in-memory ones at the "
                        "smallest, under a 4 GiB address-space limit (RLIMIT_AS)")
    parser.add_argument("--worker", default=None)
    parser.add_argument("--result", default=None)
    args, rest = parser.parse_known_args()
    if args.worker:
        Path(args.result).write_text(json.dumps(worker(args.worker, rest), default=str))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")] if args.sizes else (
        [100_000, 200_000] if args.quick else [1_000_000, 5_000_000, 10_000_000])
    in_memory_max = args.in_memory_max or (sizes[-1] if args.quick else 5_000_000)
    data = Path(args.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    reused = {(r["path"], r["rows"]): r for r in json.loads(Path(args.reuse).read_text())["runs"]} if args.reuse else {}
    rerun = {(k, int(n)) for k, n in (item.split("@") for item in args.rerun.split(",") if item)}
    for rows in sizes:
        ref, cur = data / f"ref-{rows}.parquet", data / f"cur-{rows}.parquet"
        t0 = time.perf_counter()
        for path, shifted in ((ref, False), (cur, True)):
            if not path.exists():
                generate(path, rows, 1 if shifted else 0, shifted)
        suite_path = data / f"suite-{rows}.json"
        suite_path.write_text(json.dumps(suite(rows)))
        print(f"== {rows:,} rows x {len(columns())} columns (data ready in {time.perf_counter() - t0:.0f} s, "
              f"{cur.stat().st_size / 1e9:.2f} GB per window)", flush=True)
        paths = [("validate-streaming", [str(cur), str(suite_path)]), ("drift-streaming", [str(ref), str(cur)])]
        if rows <= in_memory_max:
            paths += [("validate-pandas", [str(cur), str(suite_path)]), ("drift-pandas-profile", [str(ref), str(cur)])]
        if rows == sizes[0]:
            paths += [("validate-bare-gx", [str(cur), str(suite_path)]), ("drift-pandas-full", [str(ref), str(cur)]),
                      ("drift-bare-evidently", [str(ref), str(cur)])]
            if args.spark:
                paths += [("validate-spark", [str(cur), str(suite_path)]), ("drift-spark", [str(ref), str(cur)])]
        found = {}
        for kind, child_args in paths:
            if (kind, rows) in reused and (kind, rows) not in rerun:
                rec = {**reused[(kind, rows)], "reused": True}
                found[kind] = rec
                runs.append(rec)
                continue
            rec = run_child(kind, child_args, args.timeout)
            rec["rows"] = rows
            found[kind] = rec
            runs.append(rec)
        for a, b in (("validate-streaming", "validate-pandas"), ("validate-pandas", "validate-bare-gx"),
                     ("validate-streaming", "validate-spark"), ("drift-streaming", "drift-pandas-profile"),
                     ("drift-streaming", "drift-pandas-full"), ("drift-pandas-full", "drift-bare-evidently"),
                     ("drift-streaming", "drift-spark")):
            if a in found and b in found and found[a]["rc"] == 0 and found[b]["rc"] == 0:
                c = compare(found[a], found[b])
                if a.startswith("validate") and "messages" in found[a] and "messages" in found[b]:
                    c["same_unexpected_counts"] = found[a]["unexpected_counts"] == found[b]["unexpected_counts"]
                if a.startswith("drift") and "scores" in found[a] and "scores" in found[b]:
                    c["max_score_diff"] = max(abs(found[a]["scores"][k] - found[b]["scores"][k])
                                              for k in found[a]["scores"])
                checks.append({"rows": rows, "a": a, "b": b, **c})
        drifted = sorted(k for k, v in found["drift-streaming"].get("verdicts", {}).items() if v)
        checks.append({"rows": rows, "a": "drift-streaming", "b": "known shifts", "equal": drifted == sorted(SHIFTED),
                       "different": sorted(set(drifted) ^ set(SHIFTED))})
    capped: list[dict[str, Any]] = []
    if args.limit_runs:
        print("== under a 4 GiB address-space limit", flush=True)
        big, small = sizes[-1], sizes[0]
        for kind, rows in (("validate-streaming", big), ("drift-streaming", big), ("validate-pandas", small),
                           ("drift-pandas-profile", small)):
            ref, cur = str(data / f"ref-{rows}.parquet"), str(data / f"cur-{rows}.parquet")
            child_args = [cur, str(data / f"suite-{rows}.json")] if kind.startswith("validate") else [ref, cur]
            capped.append({**run_child(kind, child_args, args.timeout, LIMIT_BYTES), "rows": rows})
    limits = {}
    for kind in sorted({r["path"] for r in runs}):
        pts = [(r["rows"], r["peak_rss_mib"]) for r in runs if r["path"] == kind and r["rc"] == 0]
        limits[kind] = {**fit_limit(pts), "measured": pts}
    print("| path | rows | wall s | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    for r in runs:
        print(f"| {r['path']} | {r['rows']:,} | {r['wall_s']:.1f} | {r['peak_rss_mib']:.0f}"
              f"{' (' + str(r.get('error')) + ')' if r['rc'] else ''} |")
    print("")
    print("| path | MiB per 1M rows | largest table within 4 GiB (extrapolated) |")
    print("|---|---:|---|")
    for kind, lim in limits.items():
        largest = ("bounded by the chunk size: no row limit (disk)" if lim.get("bounded")
                   else f"{lim['rows_at_4gib']:,} rows" if lim.get("rows_at_4gib") else "one size measured")
        print(f"| {kind} | {lim.get('mib_per_million_rows')} | {largest} |")
    if capped:
        print("")
        print("| under a 4 GiB address-space limit | rows | finished | wall s | peak RSS MiB |")
        print("|---|---:|---|---:|---:|")
        for r in capped:
            print(f"| {r['path']} | {r['rows']:,} | {'yes' if r['rc'] == 0 else 'no: ' + str(r.get('error'))} | "
                  f"{r['wall_s']:.1f} | {r['peak_rss_mib']:.0f} |")
    print("")
    print("> Peak RSS of a Spark path is its Python driver's: the JVM runs apart (spark.driver.memory bounds it).")
    print("> Each figure is one run on a shared machine; wall times vary with the load of the day, RSS does not.")
    for c in checks:
        line = f"> {c['rows']:,} rows: {c['a']} vs {c['b']}: {'same verdicts' if c['equal'] else 'DIFFERENT'}"
        if c["different"]:
            line += f" ({', '.join(c['different'])})"
        if "max_score_diff" in c:
            line += f"; max score difference {c['max_score_diff']:.4g}"
        if c.get("same_unexpected_counts"):
            line += "; unexpected counts equal"
        print(line)
    result = {"machine": platform.machine(), "cpus": os.cpu_count(), "sizes": sizes, "columns": len(columns()),
              "runs": runs, "checks": checks, "limits": limits, "capped_runs": capped, "shifted_columns": SHIFTED}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0 if all(c["equal"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
