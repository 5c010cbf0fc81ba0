"""DDP (and FSDP) on the GPU with nccl through TorchrunLauncher, against bare torchrun running the same loop.

    PYTHONPATH=plugins python benchmarks/gpu_check.py --out DIR [--rows 400000] [--epochs 3]

Needs torch with CUDA, pandas and the package's sources (no Airflow, MLflow or boto3: the launcher and the
worker runtime import none of them). On a machine without a GPU it runs on the CPU with gloo, which is how it
is tried before a GPU is at hand; the report says which device and backend ran.

It records: (1) a DDP run through the launcher, nproc = number of GPUs: samples/s, time per checkpoint save,
backend; (2) the same loop as a bare script under torchrun on the same device, for the throughput ratio;
(3) a resume: the run stopped after the first epoch and continued by a second launch in the same checkpoint
folder ends with weights bitwise equal to the uninterrupted run; (4) FSDP on the same device, and its sharded
checkpoint loaded back; (5) checkpoint save throughput against raw torch.save on this machine's disk.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training import BARE_LOOP, bench_checkpoint_disk, make_data  # noqa: E402

from airflow_mlops.checkpoints.state import load_model  # noqa: E402
from airflow_mlops.training.config import CheckpointPolicy, Strategy, TrainingConfig  # noqa: E402
from airflow_mlops.training.launcher import TorchrunLauncher, child_env, free_port  # noqa: E402

HIDDEN = [512, 256]


def config(root: Path, name: str, data, *, epochs: int, nproc: int, strategy: str = "ddp") -> TrainingConfig:
    return TrainingConfig(dataset=data, checkpoint_dir=str(root / name / "ckpt"), output_dir=str(root / name / "out"),
                          epochs=epochs, batch_size=1024, nproc_per_node=nproc, log_every_n_steps=100,
                          strategy=strategy, model_kwargs={"hidden_sizes": HIDDEN}, run_name=name,
                          checkpoint=CheckpointPolicy(every_n_epochs=1, keep_last=2, keep_best=0,
                                                      monitor="train_loss"))


def weights(uri: str) -> dict[str, torch.Tensor]:
    model, _ = load_model(uri)
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    nproc = max(gpus, 1)
    report: dict = {
        "python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if gpus else None,
    }
    log_lines: list[str] = []

    def keep(line: str) -> None:
        log_lines.append(line)
        print(line, flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        root = Path(tmp)
        data = make_data(root, args.rows, 16)
        script = root / "bare_loop.py"
        script.write_text(BARE_LOOP)

        # (1) + (2): the launcher and the bare loop, alternating, several times.
        ours, bare, per_ckpt = [], [], []
        full = None
        for i in range(args.repeats):
            result = TorchrunLauncher().run(config(root, f"ddp{i}", data, epochs=args.epochs, nproc=nproc),
                                            log_line=keep, timeout_s=300)
            full = full or result
            ours.append(result.samples_per_second)
            per_ckpt.append(result.extra["checkpoint_stall_s"] / result.extra["checkpoints_written"])
            target = root / f"bare{i}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc), "--rdzv-backend",
                   "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--max-restarts", "0", str(script),
                   data.train_uri, ",".join(data.feature_columns), str(args.epochs), "1024", ",".join(map(str, HIDDEN)),
                   str(target)]
            subprocess.run(cmd, check=True, capture_output=True, env=child_env())
            bare.append(json.loads(target.read_text())["samples_per_second"])
        assert full is not None
        report["ddp"] = {
            "device": full.extra["device"], "backend": full.extra["backend"], "world_size": full.world_size,
            "rows": args.rows, "epochs": args.epochs, "steps": full.steps, "repeats": args.repeats,
            "ours_samples_per_s": ours, "bare_samples_per_s": bare,
            "median_ratio_ours_over_bare": statistics.median(o / b for o, b in zip(ours, bare, strict=True)),
            "checkpoint_stall_s_per_save": statistics.median(per_ckpt),
            "final_metrics": full.metrics,
        }

        # (3) resume: stop after epoch 1, continue with a second launch, compare with the uninterrupted run.
        cut = config(root, "resume", data, epochs=1, nproc=nproc)
        TorchrunLauncher().run(cut, log_line=keep, timeout_s=300)
        cut.epochs = args.epochs
        resumed = TorchrunLauncher().run(cut, log_line=keep, timeout_s=300)
        a, b = weights(full.last_checkpoint_uri), weights(resumed.last_checkpoint_uri)
        report["resume"] = {
            "resumed_from": resumed.resumed_from,
            "bitwise_equal_to_uninterrupted": all(torch.equal(a[k], b[k]) for k in a),
            "max_abs_difference": max(float((a[k] - b[k]).abs().max()) for k in a),
        }

        # (4) FSDP on the same device; its sharded checkpoint read back as a plain model.
        fsdp = TorchrunLauncher().run(config(root, "fsdp", data, epochs=1, nproc=nproc, strategy=Strategy.FSDP.value),
                                      log_line=keep, timeout_s=300)
        loaded = weights(fsdp.last_checkpoint_uri)
        report["fsdp"] = {"device": fsdp.extra["device"], "backend": fsdp.extra["backend"],
                          "samples_per_s": fsdp.samples_per_second, "metrics": fsdp.metrics,
                          "checkpoint_tensors": len(loaded)}

        # (5) checkpoint save against raw torch.save on this disk.
        (root / "disk").mkdir()
        report["checkpoint_disk"] = bench_checkpoint_disk(root / "disk", repeats=5, params_millions=12)

    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out_dir / "gpu_check.log").write_text("\n".join(log_lines) + "\n")
    print(json.dumps(report, indent=1, default=str))
    ok = report["ddp"]["backend"] == ("nccl" if gpus else "gloo") and report["resume"]["bitwise_equal_to_uninterrupted"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
