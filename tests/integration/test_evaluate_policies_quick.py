"""Smoke test of the prequential policy evaluation: `evaluate_policies.py --quick` on one real stream, tables rendered."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration]


def test_quick_evaluation_runs_every_policy_and_renders_the_tables(tmp_path):
    out = tmp_path / "policies.json"
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- policy-tables:begin -->\nold\n<!-- policy-tables:end -->\nafter\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "evaluate_policies.py"), "--quick", "--windows", "18",
                    "--streams", "weather", "--data-dir", str(tmp_path / "data"), "--out", str(out)],
                   check=True, env=env, timeout=120, capture_output=True)
    results = json.loads(out.read_text())
    stream = results["streams"]["weather"]
    policies = stream["policies"]
    assert set(policies) == {"never", "every", "ft_every", "drift_only", "ours"}
    trained = 18 - 3  # the first sixth (3 windows) trains the initial model
    assert policies["every"]["actions_seed0"] == "R" * trained
    assert policies["never"]["samples"] == 0 and policies["every"]["wall_share_of_every"] == 1.0
    assert len(policies["ours"]["actions_seed0"]) == trained
    assert 0 < policies["ours"]["sample_share_of_every"] < 1
    assert all(r["metric_reported"] > 0 for r in policies.values())
    assert results["config"]["ours"]["fine_tune_every_window"] is True  # the shipped defaults were evaluated
    # the candidate defaults were scored on the development windows only (18 // 3 - 3 = 3 windows)
    selection = results["selection"]
    assert selection["winner"] in selection["candidates"] and set(selection["scores"]) == set(selection["candidates"])
    for figures in selection["development"].values():
        assert len(figures["weather"]["actions_seed0"]) == 3 and 0 < figures["weather"]["sample_share_of_every"] < 1
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "policy_tables.py"), str(out), "--readme", str(readme)],
                   check=True, env=env, timeout=60, capture_output=True)
    text = readme.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| ours (shipped defaults)" in text.replace("**", "") and "| weather |" in text
    assert "(winner)" in text and "The shipped defaults are the winner" in text
