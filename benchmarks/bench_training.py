"""Training and checkpoint benchmarks against the bare libraries: torchrun, torch.save, boto3.

    python benchmarks/bench_training.py --out benchmarks/results/training.json [--quick]

(a) samples/s of the same DDP loop through TorchrunLauncher vs a bare script under torchrun (the bare loop,
    like the runtime, uses the GPU with nccl where there is one, else the CPU with gloo);
(b) checkpoint save MB/s vs raw torch.save to the same disk, and S3 commit vs raw boto3 upload_file to the
    same moto endpoint;
(c) training stall per checkpoint with sync vs async (background) saves.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from airflow_mlops.checkpoints import CheckpointManager
from airflow_mlops.checkpoints.state import MODEL_FILE, TRAINER_FILE
from airflow_mlops.hooks.storage import S3Storage
from airflow_mlops.training.config import CheckpointPolicy, DatasetSpec, TrainingConfig
from airflow_mlops.training.launcher import TorchrunLauncher, child_env, free_port

BARE_LOOP = r'''
import math, sys, time, json, os
import pandas as pd, torch, torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

train_uri, features, epochs, batch_size, hidden, out = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3]), int(sys.argv[4]), [int(h) for h in sys.argv[5].split(",")], sys.argv[6]
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else torch.device("cpu")
if dev.type == "cuda":
    torch.cuda.set_device(dev)
dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
df = pd.read_csv(train_uri)
x = torch.tensor(df[features].to_numpy(), dtype=torch.float32)
y = torch.tensor(df["label"].to_numpy(), dtype=torch.float32)
torch.manual_seed(0)
layers, width = [], x.shape[1]
for h in hidden:
    layers += [nn.Linear(width, h), nn.ReLU()]
    width = h
model = DistributedDataParallel(nn.Sequential(*layers, nn.Linear(width, 1)).to(dev))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
loss_fn = nn.BCEWithLogitsLoss()
steps = math.ceil(math.ceil(len(x) / world) / batch_size)
start, samples = time.perf_counter(), 0
for epoch in range(epochs):
    sampler = DistributedSampler(range(len(x)), num_replicas=world, rank=rank, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    order = torch.tensor(list(sampler))
    for b in range(steps):
        idx = order[b * batch_size:(b + 1) * batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x[idx].to(dev)).squeeze(1), y[idx].to(dev))
        loss.backward()
        opt.step()
        samples += len(idx) * world
if dev.type == "cuda":
    torch.cuda.synchronize()
duration = time.perf_counter() - start
if rank == 0:
    torch.save(model.module.state_dict(), out + ".pt")
    with open(out, "w") as fh:
        json.dump({"samples_per_second": samples / duration, "duration_s": duration}, fh)
dist.destroy_process_group()
'''


def make_data(root: Path, rows: int, features: int) -> DatasetSpec:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features))
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(features)])
    df["label"] = (x[:, 0] + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    df.to_csv(root / "train.csv", index=False)
    return DatasetSpec(train_uri=str(root / "train.csv"), target_column="label",
                       feature_columns=[f"f{i}" for i in range(features)])


def bench_launcher(root: Path, repeats: int, rows: int, epochs: int) -> dict:
    data = make_data(root, rows, 16)
    hidden = [128, 64]
    ours, bare, ours_wall, bare_wall = [], [], [], []
    script = root / "bare_loop.py"
    script.write_text(BARE_LOOP)
    for i in range(repeats):
        cfg = TrainingConfig(dataset=data, checkpoint_dir=str(root / f"ckpt{i}"), output_dir=str(root / f"out{i}"),
                             epochs=epochs, batch_size=256, nproc_per_node=2, log_every_n_steps=10_000,
                             model_kwargs={"hidden_sizes": hidden},
                             checkpoint=CheckpointPolicy(every_n_epochs=epochs, keep_best=0, monitor="train_loss"))
        t = time.perf_counter()
        result = TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=300)
        ours_wall.append(time.perf_counter() - t)
        ours.append(result.samples_per_second)
        out = root / f"bare{i}.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--max-restarts", "0", str(script), data.train_uri,
               ",".join(data.feature_columns), str(epochs), "256", ",".join(map(str, hidden)), str(out)]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env=child_env())
        bare_wall.append(time.perf_counter() - t)
        bare.append(json.loads(out.read_text())["samples_per_second"])
    ratios = [o / b for o, b in zip(ours, bare, strict=True)]
    return {
        "rows": rows, "epochs": epochs, "processes": 2, "repeats": repeats,
        "ours_samples_per_s": ours, "bare_samples_per_s": bare,
        "median_ratio_ours_over_bare": statistics.median(ratios),
        "ours_wall_s": ours_wall, "bare_wall_s": bare_wall,
        "median_wall_ratio_ours_over_bare": statistics.median(o / b for o, b in zip(ours_wall, bare_wall,
                                                                                    strict=True)),
    }


def checkpoint_state(params_millions: float) -> tuple[dict, dict]:
    width = int((params_millions * 1e6 / 3) ** 0.5)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(3)])
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(2, width)).sum().backward()
    opt.step()
    return model.state_dict(), {"optimizer": opt.state_dict(), "step": 1}


def _size_mb(paths: list[Path]) -> float:
    return sum(p.stat().st_size for p in paths) / 1e6


def bench_checkpoint_disk(root: Path, repeats: int, params_millions: float) -> dict:
    """
    Save through CheckpointManager (sha256 of every byte, manifest, atomic rename) vs raw torch.save.

    "commit" is the time until the checkpoint is published to readers, as torch.save returns once its bytes are
    in the page cache; "durable" adds the background flush to the device, against torch.save followed by fsync.
    Each side starts with its earlier files flushed, so no side pays for the other's write-back.
    """
    model_sd, trainer = checkpoint_state(params_millions)
    manager = CheckpointManager(str(root / "ours"), CheckpointPolicy(keep_last=2, keep_best=0))
    ours, ours_durable, raw, raw_sync = [], [], [], []
    size = 0.0
    for i in range(repeats + 1):  # the first round warms up both sides and is not counted
        if i == 1:
            for series in (ours, ours_durable, raw, raw_sync):
                series.clear()
        os.sync()
        t = time.perf_counter()
        staged = manager.stage(i + 1)
        staged.save_torch(MODEL_FILE, model_sd)
        staged.save_torch(TRAINER_FILE, trainer)
        info = manager.commit(staged, epoch=0)
        ours.append(time.perf_counter() - t)
        manager.wait_durable()
        ours_durable.append(time.perf_counter() - t)
        size = sum(f["size"] for f in info.manifest["files"].values()) / 1e6
        manager.apply_retention()
        raw_dir = root / f"raw{i}"
        raw_dir.mkdir()
        os.sync()
        t = time.perf_counter()
        torch.save(model_sd, raw_dir / MODEL_FILE)
        torch.save(trainer, raw_dir / TRAINER_FILE)
        raw.append(time.perf_counter() - t)
        sync_dir = root / f"rawsync{i}"
        sync_dir.mkdir()
        os.sync()
        t = time.perf_counter()
        for name, obj in ((MODEL_FILE, model_sd), (TRAINER_FILE, trainer)):
            with open(sync_dir / name, "wb") as fh:
                torch.save(obj, fh)
                fh.flush()
                os.fsync(fh.fileno())
        raw_sync.append(time.perf_counter() - t)
        shutil.rmtree(raw_dir)
        shutil.rmtree(sync_dir)
    med = statistics.median
    return {
        "size_mb": round(size, 1), "repeats": repeats,
        "ours_mb_per_s": size / med(ours), "raw_torch_save_mb_per_s": size / med(raw),
        "ours_durable_mb_per_s": size / med(ours_durable),
        "raw_torch_save_fsync_mb_per_s": size / med(raw_sync),
        "ratio_ours_over_raw": med(raw) / med(ours),
        "ratio_ours_durable_over_raw_fsync": med(raw_sync) / med(ours_durable),
        "ratios_per_run": [r / o for r, o in zip(raw, ours, strict=True)],
    }


def bench_checkpoint_s3(root: Path, repeats: int, params_millions: float) -> dict:
    port = free_port()
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    log = open(root / "moto.log", "wb")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    try:
        import boto3

        client = boto3.session.Session().client("s3", endpoint_url=endpoint)
        for _ in range(100):
            try:
                client.create_bucket(Bucket="bench")
                break
            except Exception:  # noqa: BLE001 - server still starting
                time.sleep(0.1)
        model_sd, trainer = checkpoint_state(params_millions)
        storage = S3Storage(endpoint_url=endpoint)
        ours, raw = [], []
        size = 0.0
        for i in range(repeats):
            manager = CheckpointManager(f"s3://bench/ours/{i}", storage=storage)
            staged = manager.stage(1)
            staged.save_torch(MODEL_FILE, model_sd)
            staged.save_torch(TRAINER_FILE, trainer)
            files = [Path(staged.path(MODEL_FILE)), Path(staged.path(TRAINER_FILE))]
            size = _size_mb(files)
            copies = [root / f"copy{j}.pt" for j in range(len(files))]
            for src, dst in zip(files, copies, strict=True):
                shutil.copyfile(src, dst)
            t = time.perf_counter()
            manager.commit(staged, epoch=0)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            for j, path in enumerate(copies):
                client.upload_file(str(path), "bench", f"raw/{i}/{j}.pt")
            raw.append(time.perf_counter() - t)
        med = statistics.median
        return {"size_mb": round(size, 1), "repeats": repeats, "ours_mb_per_s": size / med(ours),
                "raw_boto3_upload_file_mb_per_s": size / med(raw), "ratio_ours_over_raw": med(raw) / med(ours)}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def bench_async(root: Path, rows: int, epochs: int, params_hidden: int) -> dict:
    data = make_data(root, rows, 16)
    out = {}
    for mode in ("sync", "async"):
        cfg = TrainingConfig(dataset=data, checkpoint_dir=str(root / f"ckpt-{mode}"), output_dir=str(root / mode),
                             epochs=epochs, batch_size=128, nproc_per_node=1, log_every_n_steps=10_000,
                             model_kwargs={"hidden_sizes": [params_hidden, params_hidden]},
                             checkpoint=CheckpointPolicy(every_n_steps=10, keep_last=2, keep_best=0,
                                                         monitor="train_loss", async_save=mode == "async"))
        result = TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=300)
        n = result.extra["checkpoints_written"]
        out[mode] = {"checkpoints": n, "stall_ms_per_checkpoint": 1000 * result.extra["checkpoint_stall_s"] / n,
                     "duration_s": result.duration_s}
    out["stall_ratio_async_over_sync"] = (out["async"]["stall_ms_per_checkpoint"]
                                          / out["sync"]["stall_ms_per_checkpoint"])
    return out


def table(results: dict) -> str:
    a, d, s, c = results["launcher"], results["checkpoint_disk"], results["checkpoint_s3"], results["async"]
    rows = [
        ("(a) DDP loop samples/s, 2 procs", f"{statistics.median(a['ours_samples_per_s']):.0f}",
         f"{statistics.median(a['bare_samples_per_s']):.0f} (bare torchrun)", f"{a['median_ratio_ours_over_bare']:.2f}"),
        ("(a) wall time incl. start, s", f"{statistics.median(a['ours_wall_s']):.1f}",
         f"{statistics.median(a['bare_wall_s']):.1f} (bare torchrun)", f"{a['median_wall_ratio_ours_over_bare']:.2f}"),
        (f"(b) disk save MB/s ({d['size_mb']} MB), until published", f"{d['ours_mb_per_s']:.0f}",
         f"{d['raw_torch_save_mb_per_s']:.0f} (torch.save)", f"{d['ratio_ours_over_raw']:.2f}"),
        ("(b) disk save MB/s, until on the device", f"{d['ours_durable_mb_per_s']:.0f}",
         f"{d['raw_torch_save_fsync_mb_per_s']:.0f} (torch.save+fsync)",
         f"{d['ratio_ours_durable_over_raw_fsync']:.2f}"),
        (f"(b) S3 upload MB/s ({s['size_mb']} MB, moto)", f"{s['ours_mb_per_s']:.0f}",
         f"{s['raw_boto3_upload_file_mb_per_s']:.0f} (boto3 upload_file)", f"{s['ratio_ours_over_raw']:.2f}"),
        ("(c) stall per checkpoint, ms", f"{c['async']['stall_ms_per_checkpoint']:.1f} (async)",
         f"{c['sync']['stall_ms_per_checkpoint']:.1f} (sync)", f"{c['stall_ratio_async_over_sync']:.2f}"),
    ]
    lines = ["| benchmark | ours | baseline | ratio |", "|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/training.json")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and smaller sizes (about 1.5 min)")
    args = parser.parse_args()
    quick = args.quick
    results: dict = {"quick": quick, "torch": torch.__version__, "python": platform.python_version(),
                     "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        for name in ("launcher", "disk", "s3", "async"):
            (root / name).mkdir()
        t0 = time.perf_counter()
        results["launcher"] = bench_launcher(root / "launcher", repeats=2 if quick else 5,
                                             rows=20_000 if quick else 40_000, epochs=2 if quick else 3)
        results["checkpoint_disk"] = bench_checkpoint_disk(root / "disk", repeats=3 if quick else 5,
                                                           params_millions=4 if quick else 12)
        results["checkpoint_s3"] = bench_checkpoint_s3(root / "s3", repeats=2 if quick else 3,
                                                       params_millions=4 if quick else 12)
        results["async"] = bench_async(root / "async", rows=10_000 if quick else 20_000, epochs=2,
                                       params_hidden=512 if quick else 1024)
        results["total_s"] = round(time.perf_counter() - t0, 1)
    md = table(results)
    results["table"] = md
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(md)
    print(f"\nwritten to {out} in {results['total_s']}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
