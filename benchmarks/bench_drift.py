"""Drift on 1,000,000 x 20 against 1,000,000 x 20: our operator's check against Evidently's own Report, and the sampled and profiled modes against full.

    python benchmarks/bench_drift.py --out benchmarks/results/drift.json [--quick]

The data: 20 columns (16 normal floats, 2 skewed floats, 2 small integer codes); the current window shifts 5 of them,
by amounts from clearly visible to barely there, so that verdicts near the threshold are part of the test.
"ours (full)" is airflow_mlops.drift.report.detect_drift in full mode (schema check, Evidently Report with the data
drift preset and per-column tests, summary); "Evidently Report" is Report([DataDriftPreset()]).run(...).dict() on the
same frames. Both skip the HTML rendering; it is timed once on its own.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SHIFTS = {"f00": 0.5, "f01": 0.2, "f02": 0.13, "f03": 0.08, "skew0": 0.3}


def make_frames(rows: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)

    def one(shift: bool) -> pd.DataFrame:
        cols: dict[str, Any] = {}
        for i in range(16):
            name = f"f{i:02d}"
            cols[name] = rng.normal(SHIFTS.get(name, 0.0) if shift else 0.0, 1.0, rows)
        for i in range(2):
            name = f"skew{i}"
            cols[name] = rng.lognormal(SHIFTS.get(name, 0.0) if shift else 0.0, 0.5, rows)
        for i in range(2):
            p = [0.5, 0.3, 0.2] if not shift or i else [0.4, 0.3, 0.3]
            cols[f"code{i}"] = rng.choice(np.array([0, 1, 2], dtype="int64"), rows, p=p)
        return pd.DataFrame(cols)

    return one(False), one(True)


def timed(fn, repeats: int) -> tuple[list[float], Any]:
    times, out = [], None
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def evidently_bare(ref: pd.DataFrame, cur: pd.DataFrame) -> dict[str, Any]:
    from evidently import Report
    from evidently.presets import DataDriftPreset

    return Report(metrics=[DataDriftPreset()], include_tests=True).run(current_data=cur, reference_data=ref).dict()


def bare_verdicts(snapshot: dict[str, Any]) -> dict[str, bool]:
    out = {}
    for test in snapshot.get("tests") or []:
        params = (test.get("metric_config") or {}).get("params") or {}
        if str(params.get("type", "")).endswith(":ValueDrift"):
            status = test.get("status")
            out[params["column"]] = str(getattr(status, "value", status)).upper().endswith("FAIL")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--quick", action="store_true", help="100,000 rows per window, fewer repeats")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sample-size", type=int, default=20_000)
    args = parser.parse_args()
    rows = args.rows or (100_000 if args.quick else 1_000_000)
    repeats = args.repeats or 3

    import evidently  # noqa: F401  (import cost kept out of the timings)

    from airflow_mlops.drift.profile import build_profile, profile_drift
    from airflow_mlops.drift.report import DriftConfig, detect_drift

    ref, cur = make_frames(rows)
    # Warm-up on a small slice: first-call costs (lazy imports, registries) are not what is measured.
    evidently_bare(ref.iloc[:2000], cur.iloc[:2000])
    detect_drift(ref.iloc[:2000], cur.iloc[:2000], DriftConfig(), render=False)

    # Interleave ours and Evidently's so both see the same machine load.
    t_ours, t_bare = [], []
    ours_summary, bare = None, None
    for _ in range(repeats):
        t, ours_summary = timed(lambda: detect_drift(ref, cur, DriftConfig(), render=False).summary, 1)
        t_ours += t
        t, bare = timed(lambda: evidently_bare(ref, cur), 1)
        t_bare += t
    ratios = [a / b for a, b in zip(t_ours, t_bare, strict=True)]
    full_verdicts = ours_summary.verdicts()
    assert full_verdicts == bare_verdicts(bare), "our full mode must give Evidently's verdicts"

    sample_cfg = DriftConfig(mode="sample", sample_size=args.sample_size, seed=0)
    t_sample, sample_summary = timed(lambda: detect_drift(ref, cur, sample_cfg, render=False).summary, repeats)
    profile_cfg = DriftConfig(mode="profile")
    t_build, profile = timed(lambda: build_profile(ref, profile_cfg), 1)
    t_profile, profile_summary = timed(lambda: profile_drift(profile, cur, profile_cfg), repeats)

    t_html, _ = timed(lambda: detect_drift(ref.iloc[: rows // 10], cur.iloc[: rows // 10], DriftConfig()).html, 1)

    def agree(summary) -> tuple[int, list[str]]:
        v = summary.verdicts()
        diff = sorted(c for c in full_verdicts if v.get(c) != full_verdicts[c])
        return len(full_verdicts) - len(diff), diff

    med_full, med_bare = statistics.median(t_ours), statistics.median(t_bare)
    s_agree, s_diff = agree(sample_summary)
    p_agree, p_diff = agree(profile_summary)
    n = len(full_verdicts)
    result = {
        "rows": rows, "columns": ref.shape[1], "repeats": repeats, "machine": platform.machine(),
        "evidently_report_s": t_bare, "ours_full_s": t_ours, "ratios": ratios,
        "median_ratio": statistics.median(ratios),
        "sample_s": t_sample, "sample_size": args.sample_size, "sample_speedup": med_full / statistics.median(t_sample),
        "profile_build_s": t_build[0], "profile_check_s": t_profile,
        "profile_speedup": med_full / statistics.median(t_profile),
        "profile_speedup_with_build": med_full / (statistics.median(t_profile) + t_build[0]),
        "full_drifted": ours_summary.drifted_columns, "sample_drifted": sample_summary.drifted_columns,
        "profile_drifted": profile_summary.drifted_columns,
        "sample_agreement": f"{s_agree}/{n}", "sample_disagree": s_diff,
        "profile_agreement": f"{p_agree}/{n}", "profile_disagree": p_diff,
        "html_render_s_at_tenth_rows": t_html[0],
        "scores": {c.column: {"full": c.score, "profile": p.score}
                   for c, p in zip(ours_summary.columns, profile_summary.columns, strict=True)},
    }
    print(f"| measurement ({rows:,} x {ref.shape[1]} vs {rows:,} x {ref.shape[1]}) | median s | ratio / speed-up "
          "| column verdicts equal to full | target |")
    print("|---|---|---|---|---|")
    print(f"| Evidently Report (DataDriftPreset) | {med_bare:.2f} | 1.00 | {n}/{n} | |")
    print(f"| ours, full mode | {med_full:.2f} | {result['median_ratio']:.3f} (median of per-run ratios) | {n}/{n} "
          "| <= 1.1 |")
    print(f"| ours, sample mode ({args.sample_size:,} rows each, seeded) | {statistics.median(t_sample):.2f} | "
          f"{result['sample_speedup']:.1f}x faster | {s_agree}/{n} | >= 10x |")
    print(f"| ours, profile mode (cached reference profile) | {statistics.median(t_profile):.2f} | "
          f"{result['profile_speedup']:.1f}x faster ({result['profile_speedup_with_build']:.1f}x with the "
          f"{t_build[0]:.2f} s profile build) | {p_agree}/{n} | >= 10x |")
    print()
    print(f"> drifted in full mode: {', '.join(ours_summary.drifted_columns)}; sample disagrees on "
          f"{s_diff or 'none'}, profile on {p_diff or 'none'}. Shifts: {SHIFTS} (Wasserstein threshold 0.1).")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
