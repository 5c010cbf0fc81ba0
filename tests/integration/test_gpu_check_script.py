"""The GPU check (benchmarks/gpu_check.py) runs end to end where no GPU is, on the CPU with gloo."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_cpu_and_reports_what_ran(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path), "--rows", "4000",
         "--epochs", "2", "--repeats", "1"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["gpus"] == [] and report["ddp"]["device"] == "cpu" and report["ddp"]["backend"] == "gloo"
    assert report["ddp"]["steps"] == 2 * 4 and len(report["ddp"]["bare_samples_per_s"]) == 1
    assert report["resume"]["bitwise_equal_to_uninterrupted"] is True
    assert report["resume"]["resumed_from"].endswith("step-0000000004")
    assert report["fsdp"]["backend"] == "gloo" and report["fsdp"]["checkpoint_tensors"] > 0
    assert report["checkpoint_disk"]["size_mb"] > 100
    assert "device cpu, backend gloo" in (tmp_path / "gpu_check.log").read_text()
