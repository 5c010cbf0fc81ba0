"""Markdown tables of the prequential evaluation (benchmarks/evaluate_policies.py), written into the README.

    python benchmarks/policy_tables.py benchmarks/results/policies.json --readme README.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- policy-tables:begin -->", "<!-- policy-tables:end -->"
ORDER = ("never", "every", "ft_every", "drift_only", "ours")
NAMES = {"never": "never retrain", "every": "retrain every window", "ft_every": "fine-tune every window",
         "drift_only": "feature + prediction drift only", "ours": "**ours (shipped defaults)**"}


def points(metric: str, delta: float, reference: float) -> float:
    """A difference in metric points: 100 x for AUC; percent of retrain-every-window's value for RMSE."""
    return 100 * delta if metric in ("auc", "accuracy") else 100 * delta / reference


def better(metric: str, a: float, b: float) -> float:
    """How much ``a`` is better than ``b`` (positive: better), in the metric's units."""
    return a - b if metric in ("auc", "accuracy") else b - a


def render(results: dict[str, Any]) -> str:
    out: list[str] = []
    verdicts: list[str] = []
    for name, s in results["streams"].items():
        metric = s["metric"]
        p = s["policies"]
        out.append(f"**{name}** — {s['description']}; {s['windows']} windows: initial model on {s['initial_training']}, "
                   f"development {s['development']}, reported {s['reported']} (mean of "
                   f"{len(results['config']['seeds'])} seeds).\n")
        out.append(f"| policy | {metric} reported | {metric} development | trainings (refreshes, retrains) "
                   "| samples trained | wall s (train + checks) | share of every-window wall | share of its samples |")
        out.append("|---|---|---|---|---|---|---|---|")
        for key in ORDER:
            r = p[key]
            out.append(f"| {NAMES[key]} | {r['metric_reported']:.4f} | {r['metric_development']:.4f} "
                       f"| {r['trainings']:.0f} ({r.get('refreshes', 0):.0f}, {r['retrains']:.0f}) | {r['samples']:,.0f} "
                       f"| {r['wall_seconds']:.1f} ({r['train_seconds']:.1f} + {r['check_seconds']:.2f}) "
                       f"| {r['wall_share_of_every']:.3f} | {r['sample_share_of_every']:.3f} |")
        out.append("")
        ours, every, ft = p["ours"], p["every"], p["ft_every"]
        vs_every = points(metric, better(metric, ours["metric_reported"], every["metric_reported"]),
                          every["metric_reported"])
        vs_ft = points(metric, better(metric, ours["metric_reported"], ft["metric_reported"]),
                       every["metric_reported"])
        share = ours["wall_share_of_every"]
        ok = vs_every >= -0.5 and share <= 0.10 and vs_ft >= -0.2
        verdicts.append(f"| {name} | {vs_every:+.2f} | {100 * share:.1f} % | {vs_ft:+.2f} | "
                        f"{'met' if ok else 'missed'} |")
        out.append(f"Ours, actions per window (seed 0; F routine fine-tune, U refresh, R retrain): "
                   f"`{ours['actions_seed0']}`\n")
    out.append("Targets (ours within 0.5 points of retraining every window at <= 10 % of its wall compute, and "
               "at most 0.2 points below fine-tuning every window; points: AUC x 100, RMSE in % of "
               "retrain-every-window's RMSE, positive = ours better):\n")
    out.append("| stream | ours vs every window (points) | ours' wall compute | ours vs fine-tune every window "
               "(points) | targets |")
    out.append("|---|---|---|---|---|")
    out.extend(verdicts)
    if results.get("selection"):
        out.append("")
        out.extend(selection_table(results["selection"]))
    total = results.get("total_seconds")
    if total is not None and not (isinstance(total, float) and math.isnan(total)):
        out.append(f"\nThe whole evaluation took {total / 60:.1f} min (`make evaluate`).")
    return "\n".join(out)


def selection_table(selection: dict[str, Any]) -> list[str]:
    """The candidate defaults scored on the development windows, and the winner."""
    out = ["Selection of the defaults on the development windows only (mean of the seeds; points against "
           "fine-tuning every window averaged over the streams; samples as a share of retraining every window):\n",
           "| candidate | target checks met (of 9) | points vs fine-tune every window | share of samples "
           "| refreshes / retrains, seed 0 (rainfall, flights, weather) |", "|---|---|---|---|---|"]
    for name, score in selection["scores"].items():
        counts = ", ".join(f"{f['actions_seed0'].count('U')} / {f['actions_seed0'].count('R')}"
                           for f in selection["development"][name].values())
        label = f"**{name}** (winner)" if name == selection["winner"] else name
        out.append(f"| {label} | {score['checks_met']} | {score['mean_vs_ft_every_points']:+.2f} "
                   f"| {score['mean_sample_share']:.3f} | {counts} |")
    same = "yes" if selection.get("shipped_defaults_are_the_winner") else "NO"
    out.append(f"\nRule: {selection['rule']}. The shipped defaults are the winner: {same}.")
    return out


def write_readme(readme: Path, text: str) -> None:
    body = readme.read_text()
    if BEGIN not in body or END not in body:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} block")
    body = re.sub(re.escape(BEGIN) + r".*?" + re.escape(END), lambda _: f"{BEGIN}\n{text}\n{END}", body,
                  flags=re.S)
    readme.write_text(body)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results")
    parser.add_argument("--readme", default=None)
    args = parser.parse_args()
    text = render(json.loads(Path(args.results).read_text()))
    if args.readme:
        write_readme(Path(args.readme), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
