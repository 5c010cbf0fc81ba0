"""The training loop each torchrun process runs: DDP or FSDP, evaluation, checkpoints, resume, metrics."""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from airflow_mlops.checkpoints import state as ckpt_state
from airflow_mlops.checkpoints.manager import BackgroundSaver, CheckpointInfo, CheckpointManager, local_copy
from airflow_mlops.checkpoints.retention import is_due
from airflow_mlops.checkpoints.sharded import DCP_DIRNAME, load_sharded, save_sharded
from airflow_mlops.exceptions import CheckpointError, TrackingUnavailableError, explain
from airflow_mlops.training.config import LrSchedule, Strategy, Task, TrainingConfig
from airflow_mlops.training.data import read_table, to_tensors
from airflow_mlops.training.early_stopping import STOP_PREFIX, StopState, monitored_key, split_newest
from airflow_mlops.training.early_stopping import finish as finish_stopping
from airflow_mlops.training.early_stopping import update as update_stopping
from airflow_mlops.training.models import build_model, factory_parameters, resolve_factory
from airflow_mlops.training.result import TrainingResult, write_result

log = logging.getLogger("airflow_mlops.training")


@dataclass
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistContext:
    """Join the process group torchrun prepared; a plain ``python -m`` start becomes a group of one."""
    if "RANK" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device, backend = torch.device("cuda", local_rank), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def lr_factor(schedule: LrSchedule, total_steps: int) -> Any:
    if schedule is LrSchedule.COSINE:
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    return lambda step: 1.0


def loss_function(task: Task) -> nn.Module:
    if task is Task.BINARY:
        return nn.BCEWithLogitsLoss()
    if task is Task.MULTICLASS:
        return nn.CrossEntropyLoss()
    return nn.MSELoss()


def _outputs(task: Task, out: torch.Tensor) -> torch.Tensor:
    # Single-output models predict [N, 1]; the losses of binary and regression tasks want [N].
    if task is not Task.MULTICLASS and out.dim() == 2 and out.shape[1] == 1:
        return out.squeeze(1)
    return out


def eval_metrics(task: Task, out: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Metrics on the full evaluation set (plain tensors on CPU)."""
    out, y = out.double(), y
    if task is Task.BINARY:
        loss = nn.functional.binary_cross_entropy_with_logits(out, y.double()).item()
        prob = torch.sigmoid(out).numpy()
        labels = y.numpy()
        metrics = {"val_loss": loss, "val_accuracy": float(((prob >= 0.5) == (labels >= 0.5)).mean())}
        if len(np.unique(labels)) < 2:
            metrics["val_auc"] = float("nan")
        else:
            from sklearn.metrics import roc_auc_score

            metrics["val_auc"] = float(roc_auc_score(labels, prob))
        return metrics
    if task is Task.MULTICLASS:
        loss = nn.functional.cross_entropy(out, y).item()
        return {"val_loss": loss, "val_accuracy": float((out.argmax(1) == y).double().mean())}
    err = out - y.double()
    mse = float((err**2).mean())
    return {"val_loss": mse, "val_rmse": math.sqrt(mse), "val_mae": float(err.abs().mean())}


def _clone_to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _clone_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_clone_to_cpu(v) for v in obj)
    return obj


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if v is not None and math.isfinite(v) else None) for k, v in metrics.items()}


class StepTimer:
    """Recent step times (an exponential moving average), for throughput and an ETA that ignores the start-up,
    evaluation and checkpoint time the first steps would otherwise carry."""

    def __init__(self, weight: float = 0.1, warmup_steps: int = 2) -> None:
        self.weight = weight
        self.warmup_steps = warmup_steps
        self.seen = 0
        self.step_s = 0.0
        self.sample_s = 0.0

    def add(self, seconds: float, samples: int) -> None:
        self.seen += 1
        if self.seen <= self.warmup_steps and self.step_s > 0.0:
            # The first steps pay for start-up (allocations, the first collectives): an estimate, not a rate.
            self.step_s = min(self.step_s, seconds)
            self.sample_s = min(self.sample_s, seconds / max(samples, 1))
            return
        if self.step_s == 0.0:
            self.step_s, self.sample_s = seconds, seconds / max(samples, 1)
            return
        self.step_s += self.weight * (seconds - self.step_s)
        self.sample_s += self.weight * (seconds / max(samples, 1) - self.sample_s)

    @property
    def samples_per_s(self) -> float:
        return 1.0 / self.sample_s if self.sample_s > 0 else 0.0


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.1f}min"
    return f"{seconds / 3600:.1f}h"


def _buffer_sync_argument() -> str:
    """``forward_sync_buffers`` where torch has it (``broadcast_buffers`` warns there), else the older name."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"


_BUFFER_SYNC = _buffer_sync_argument()


class MetricsSink:
    """
    Metrics to MLflow from rank 0, into the run the operator opened, sent by a background thread: an MLflow
    outage never slows training. While MLflow does not answer, a warning names its endpoint and the metrics
    wait; when it stays away longer than ``MLOPS_MLFLOW_RETRY_BUDGET_S`` (120 s), :meth:`close` fails the
    run so that Airflow's retry takes over (it resumes from the last checkpoint).
    """

    _BATCH = 1000  # MLflow's limit of metrics per log_batch call

    def __init__(self, run_id: str | None, enabled: bool) -> None:
        self.run_id = run_id
        self.endpoint = os.environ.get("MLFLOW_TRACKING_URI", "")
        self.enabled = bool(enabled and run_id and self.endpoint)
        self._client: Any = None
        self._pending: list[Any] = []
        self._pending_tags: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.down_since: float | None = None
        self.last_error: BaseException | None = None

    def log(self, metrics: dict[str, float | None], step: int) -> None:
        if not self.enabled:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        with self._lock:
            self._pending.extend(Metric(key, float(value), now_ms, step) for key, value in metrics.items()
                                 if value is not None and math.isfinite(value))
        if self._thread is None:
            from airflow_mlops.hooks.retries import bound_mlflow_client_retries, warn_mlflow_retries

            bound_mlflow_client_retries()
            warn_mlflow_retries(self.endpoint)
            self._thread = threading.Thread(target=self._loop, name="mlflow-metrics", daemon=True)
            self._thread.start()
        self._wake.set()

    def set_tags(self, tags: dict[str, str]) -> None:
        """Tags on the run, sent with the next batch of metrics."""
        if not self.enabled:
            return
        with self._lock:
            self._pending_tags.update({k: str(v)[:5000] for k, v in tags.items()})
        self.log({}, 0)

    def _loop(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._stop.is_set():
                return
            if self._flush_once():
                attempt = 0
            else:
                from airflow_mlops.hooks.storage import backoff_s

                self._stop.wait(backoff_s(attempt, base=1.0, cap=15.0))
                attempt += 1

    def _flush_once(self) -> bool:
        """Send what is pending; False when MLflow did not take it (it stays pending)."""
        with self._lock:
            batch = list(self._pending[: self._BATCH])
            tags = dict(self._pending_tags)
        if (not batch and not tags) or not self.enabled:
            return True
        try:
            if self._client is None:
                from mlflow import MlflowClient

                self._client = MlflowClient(tracking_uri=self.endpoint)
            from mlflow.entities import RunTag

            self._client.log_batch(self.run_id, metrics=batch, tags=[RunTag(k, v) for k, v in tags.items()])
        except Exception as exc:  # noqa: BLE001 - judged below
            if not _transient_tracking_error(exc):
                log.warning("MLflow at %s refused the metrics; metric logging is off for this run: %s",
                            self.endpoint, exc)
                self.enabled = False
                return True
            self.last_error = exc
            if self.down_since is None:
                self.down_since = time.monotonic()
            log.warning("MLflow at %s is not answering (%s: %s); %d metric(s) wait, training goes on",
                        self.endpoint, type(exc).__name__, str(exc).splitlines()[0][:300], len(self._pending))
            return False
        with self._lock:
            del self._pending[: len(batch)]
            for key in tags:
                if self._pending_tags.get(key) == tags[key]:
                    del self._pending_tags[key]
        if self.down_since is not None:
            log.warning("MLflow at %s answers again after %.0fs", self.endpoint, time.monotonic() - self.down_since)
            self.down_since = None
        return True

    def close(self) -> None:
        """Send what is left; raise :class:`TrackingUnavailableError` once MLflow is away past the budget."""
        if self._thread is None:
            return
        from airflow_mlops.hooks.retries import MLFLOW_BUDGET_ENV, mlflow_budget_s
        from airflow_mlops.hooks.storage import backoff_s

        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=60)
        self._thread = None
        budget = mlflow_budget_s()
        attempt = 0
        while self.enabled and (self._pending or self._pending_tags):
            if self._flush_once():
                continue
            away = time.monotonic() - (self.down_since or time.monotonic())
            if away >= budget:
                raise TrackingUnavailableError(
                    explain(f"MLflow at {self.endpoint} stayed unreachable", expected=f"an answer within "
                            f"{budget:.0f}s ({MLFLOW_BUDGET_ENV})", received=f"{type(self.last_error).__name__}: "
                            f"{str(self.last_error).splitlines()[0][:300]} for {away:.0f}s",
                            hint=f"{len(self._pending)} metric(s) not sent; the checkpoints are committed, so "
                            "an Airflow retry resumes at the end of training and logs the final metrics.")
                )
            time.sleep(min(backoff_s(attempt, base=1.0, cap=10.0), budget - away))
            attempt += 1


def _transient_tracking_error(exc: BaseException) -> bool:
    code = str(getattr(exc, "error_code", "") or "")
    return code not in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "PERMISSION_DENIED",
                        "UNAUTHENTICATED", "BAD_REQUEST", "INVALID_STATE")


class Trainer:
    """One process of a distributed run; every rank builds one, rank 0 does the file-system work."""

    def __init__(self, config: TrainingConfig, ctx: DistContext | None = None) -> None:
        self.cfg = config
        joined = time.perf_counter()
        self.ctx = ctx or init_distributed()
        self.say("Rendezvous: %d process(es) on %d node(s) joined in %.1fs (backend %s, device %s)",
                 self.ctx.world_size, config.nnodes, time.perf_counter() - joined, dist.get_backend(),
                 self.ctx.device.type)
        self.manager = CheckpointManager(config.checkpoint_dir, config.checkpoint)
        self.saver = BackgroundSaver()
        self.metrics_sink = MetricsSink(config.mlflow_run_id, self.ctx.is_main)
        self.resumed_from: str | None = None
        self.last_saved: CheckpointInfo | None = None
        self.last_saved_step = -1
        self.val_metrics: dict[str, float] = {}
        self.val_step = -1
        self.stop_metrics: dict[str, float] = {}  # metrics of the early-stopping rows, ``stop_*``
        self.stop_state = StopState()
        self.checkpoints_written = 0
        self.checkpoint_stall_s = 0.0  # time the training loop waited on checkpoints
        self.eval_s = 0.0

    # ---- helpers ------------------------------------------------------------------------------------------
    def say(self, msg: str, *args: Any) -> None:
        if self.ctx.is_main:
            log.info(msg, *args)

    def _broadcast(self, value: Any) -> Any:
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def _all_gather_object(self, value: Any) -> list[Any]:
        out: list[Any] = [None] * self.ctx.world_size
        dist.all_gather_object(out, value)
        return out

    # ---- setup --------------------------------------------------------------------------------------------
    def _load_data(self) -> None:
        cfg = self.cfg
        loading = time.perf_counter()
        table = read_table(cfg.dataset.train_uri)
        self.xs = self.ys = None
        stop = cfg.early_stopping
        if stop is not None and stop.splits:
            # A time split: the newest rows judge the epochs, the older ones are learnt from.
            table, newest = split_newest(table, stop.validation_count(len(table)), stop.time_column)
            self.xs, self.ys = to_tensors(newest, cfg.dataset, cfg.task, cfg.dataset.train_uri)
        self.x, self.y = to_tensors(table, cfg.dataset, cfg.task, cfg.dataset.train_uri)
        self.xe = self.ye = None
        if cfg.dataset.eval_uri:
            self.xe, self.ye = to_tensors(read_table(cfg.dataset.eval_uri), cfg.dataset, cfg.task,
                                          cfg.dataset.eval_uri)
        self.n = len(self.x)
        self.per_rank = math.ceil(self.n / self.ctx.world_size)
        self.steps_per_epoch = math.ceil(self.per_rank / cfg.batch_size)
        self.total_steps = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps is not None:
            self.total_steps = min(self.total_steps, cfg.max_steps)
        self.say("Data loaded: %d training rows x %d features from %s%s%s in %.1fs", self.n, self.x.shape[1],
                 cfg.dataset.train_uri, f", {len(self.xe)} evaluation rows" if self.xe is not None else "",
                 f", its newest {len(self.xs)} rows held out for early stopping" if self.xs is not None else "",
                 time.perf_counter() - loading)

    def _model_spec(self, found: CheckpointInfo | None, init_manifest: dict[str, Any] | None) -> dict[str, Any]:
        for manifest in (found.manifest if found else None, init_manifest):
            if manifest and manifest.get("model_spec"):
                return manifest["model_spec"]
        kwargs = dict(self.cfg.model_kwargs)
        params = factory_parameters(resolve_factory(self.cfg.model_factory, [self.cfg.model_factory]))
        if "in_features" in params and "in_features" not in kwargs:
            kwargs["in_features"] = int(self.x.shape[1])
        if {"feature_mean", "feature_std"} <= params and "feature_mean" not in kwargs:
            x64 = self.x.double()
            kwargs["feature_mean"] = x64.mean(0).tolist()
            kwargs["feature_std"] = x64.std(0, unbiased=False).tolist()
        if self.cfg.task is Task.MULTICLASS and "out_features" in params and "out_features" not in kwargs:
            kwargs["out_features"] = int(self.y.max()) + 1
        if self.cfg.task is Task.REGRESSION and {"target_mean", "target_std"} <= params and "target_mean" not in kwargs:
            # Targets in their own units (e.g. 25..346) are learnt as z-scores inside the model, which answers in
            # those units again: no scale for the caller to remember.
            y64 = self.y.double()
            kwargs["target_mean"] = float(y64.mean())
            kwargs["target_std"] = float(y64.std(unbiased=False))
        return {"factory": self.cfg.model_factory, "kwargs": kwargs}

    def _wrap(self, model: nn.Module) -> nn.Module:
        model = model.to(self.ctx.device)
        if self.cfg.strategy is Strategy.FSDP:
            from torch.distributed.fsdp import fully_shard

            for module in list(model.modules())[1:]:
                if any(True for _ in module.parameters(recurse=False)):
                    fully_shard(module)
            fully_shard(model)
            return model
        # DDP broadcasts every buffer from rank 0 before each forward, a collective per step. Only buffers that
        # training changes (normalization running stats) need it; constant ones (feature scaling) are equal on
        # every rank already.
        from torch.nn.modules.batchnorm import _NormBase
        from torch.nn.parallel import DistributedDataParallel

        broadcast = any(isinstance(m, _NormBase) and m.track_running_stats for m in model.modules())
        if self.ctx.device.type == "cuda":
            return DistributedDataParallel(model, device_ids=[self.ctx.local_rank], **{_BUFFER_SYNC: broadcast})
        return DistributedDataParallel(model, **{_BUFFER_SYNC: broadcast})

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        self._load_data()
        found: CheckpointInfo | None = None
        if ctx.is_main:
            self.manager.cleanup_incomplete()
            found = self.manager.latest(verify=True, remove_corrupt=True)
        found = self._broadcast(found)
        init_manifest = None
        if found is None and cfg.init_checkpoint_uri:
            from airflow_mlops.checkpoints.manager import read_manifest

            init_manifest = read_manifest(cfg.init_checkpoint_uri)
        self.model_spec = self._model_spec(found, init_manifest)

        # Same seed on every rank: identical initial weights (FSDP shards them, DDP would broadcast anyway).
        seed_everything(cfg.seed)
        # A resumed or initial checkpoint's manifest never chooses the code: its factory must be the configured
        # one (or on the deployment allow-list).
        base = build_model(self.model_spec, [cfg.model_factory])
        if init_manifest is not None:
            model_only, _ = ckpt_state.load_model(cfg.init_checkpoint_uri,  # type: ignore[arg-type]
                                                  allowed=[cfg.model_factory])
            base.load_state_dict(model_only.state_dict())
            self.say("Fine-tuning from the weights of %s", cfg.init_checkpoint_uri)
        self.model = self._wrap(base)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.learning_rate,
                                           weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg.lr_schedule,
                                                                                     self.total_steps))
        self.loss_fn = loss_function(cfg.task)
        self.step = 0
        self.epoch = 0
        self.batch_index = 0
        self.loss_sum = 0.0
        self.loss_count = 0
        # Different streams per rank for dropout and the like.
        seed_everything(cfg.seed + 1 + ctx.rank)
        if found is not None:
            self._resume(found)

    def _resume(self, info: CheckpointInfo) -> None:
        ctx = self.ctx
        self.say("Resuming from %s (step %d, epoch %d)", info.uri, info.step, info.epoch)
        layout = info.manifest.get("layout")
        with local_copy(info.uri, self.manager.storage, verify=not ctx.is_main) as directory:
            trainer = ckpt_state.load_file(directory, ckpt_state.TRAINER_FILE)
            if layout == ckpt_state.LAYOUT_SHARDED:
                load_sharded(self.model, self.optimizer, os.path.join(directory, DCP_DIRNAME))
            else:
                from torch.distributed.checkpoint.state_dict import (
                    StateDictOptions,
                    set_model_state_dict,
                    set_optimizer_state_dict,
                )

                opts = StateDictOptions(full_state_dict=True)
                set_model_state_dict(self.model, ckpt_state.load_file(directory, ckpt_state.MODEL_FILE),
                                     options=opts)
                set_optimizer_state_dict(self.model, self.optimizer, trainer["optimizer"], options=opts)
        self.scheduler.load_state_dict(trainer["scheduler"])
        self.step = int(trainer["step"])
        self.epoch = int(trainer["epoch"])
        self.batch_index = int(trainer["batch_index"])
        self.val_metrics = dict(trainer.get("val_metrics") or {})
        self.stop_metrics = dict(trainer.get("stop_metrics") or {})
        self.stop_state = StopState.from_dict(trainer.get("early_stopping"))
        if self.stop_state.best_epoch:
            self.say("Early stopping resumes: best %s %.6g at epoch %d, %d epoch(s) without improvement%s",
                     monitored_key(self.cfg.early_stopping) if self.cfg.early_stopping else "metric",
                     self.stop_state.best, self.stop_state.best_epoch, self.stop_state.bad_epochs,
                     f", stopped after epoch {self.stop_state.stopped_epoch}" if self.stop_state.stopped else "")
        if int(trainer["world_size"]) == ctx.world_size:
            self.loss_sum, self.loss_count = trainer["loss_sums"][ctx.rank]
            ckpt_state.restore_rng(trainer["rng"][ctx.rank])
        else:
            # Another world size splits the data differently; the run continues but is not bitwise repeatable.
            self.say("World size changed from %s to %d: the epoch restarts at its beginning with fresh RNG streams",
                     trainer["world_size"], ctx.world_size)
            self.batch_index = 0
            self.loss_sum, self.loss_count = 0.0, 0
            seed_everything(self.cfg.seed + 1 + ctx.rank + self.step)
        self.resumed_from = info.uri
        self.last_saved, self.last_saved_step = info, info.step

    # ---- evaluation ---------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Metrics of the evaluation set (``val_*``); collective."""
        return self._timed_evaluate(self.xe, self.ye)

    def evaluate_stop(self) -> dict[str, float]:
        """Metrics of the early-stopping rows (``stop_val_*``); collective."""
        return {STOP_PREFIX + k: v for k, v in self._timed_evaluate(self.xs, self.ys).items()}

    def _timed_evaluate(self, x: torch.Tensor | None, y: torch.Tensor | None) -> dict[str, float]:
        if x is None or y is None:
            return {}
        started = time.perf_counter()
        try:
            return self._evaluate(x, y)
        finally:
            self.eval_s += time.perf_counter() - started

    @torch.no_grad()
    def _evaluate(self, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        ctx, n = self.ctx, len(x)
        per_rank = math.ceil(n / ctx.world_size)
        # Padding repeats rows like DistributedSampler, so every rank runs the same number of forwards (FSDP).
        idx = torch.arange(ctx.rank, per_rank * ctx.world_size, ctx.world_size) % n
        self.model.eval()
        outs = []
        for start in range(0, per_rank, self.cfg.eval_batch_size):
            b = idx[start:start + self.cfg.eval_batch_size]
            outs.append(_outputs(self.cfg.task, self.model(x[b].to(ctx.device))).float().cpu())
        self.model.train()
        local = torch.cat(outs).to(ctx.device)
        gathered = [torch.empty_like(local) for _ in range(ctx.world_size)]
        dist.all_gather(gathered, local)
        all_out = torch.stack(gathered, 1).reshape(per_rank * ctx.world_size, *local.shape[1:])[:n].cpu()
        return eval_metrics(self.cfg.task, all_out, y)

    def _global_train_loss(self) -> float:
        t = torch.tensor([self.loss_sum, float(self.loss_count)], dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(t)
        return float(t[0] / t[1]) if t[1] > 0 else float("nan")

    # ---- checkpoints --------------------------------------------------------------------------------------
    def save(self, *, epoch: int, batch_index: int, metrics: dict[str, float]) -> None:
        """Collective: every rank calls it; rank 0 (and, for FSDP, every rank's shards) writes."""
        cfg, ctx = self.cfg, self.ctx
        rng = self._all_gather_object(ckpt_state.capture_rng())
        sums = self._all_gather_object((self.loss_sum, self.loss_count))
        trainer: dict[str, Any] = {
            "step": self.step, "epoch": epoch, "batch_index": batch_index, "world_size": ctx.world_size,
            "scheduler": self.scheduler.state_dict(), "rng": rng, "loss_sums": sums,
            "val_metrics": dict(self.val_metrics), "stop_metrics": dict(self.stop_metrics),
            "early_stopping": self.stop_state.to_dict(),
        }
        meta = {
            "layout": ckpt_state.LAYOUT_SHARDED if cfg.strategy is Strategy.FSDP else ckpt_state.LAYOUT_FULL,
            "model_spec": self.model_spec,
            "config": cfg.to_dict(),
            "strategy": cfg.strategy.value,
            "world_size": ctx.world_size,
            "data_position": {"epoch": epoch, "batch_index": batch_index},
            "torch_version": torch.__version__,
        }
        if cfg.early_stopping is not None:
            # Readable without torch: what the stopper had seen when this checkpoint was taken.
            meta["early_stopping"] = {"monitor": monitored_key(cfg.early_stopping), **self.stop_state.to_dict()}
        keep = self._best_epoch_uri()
        clean_metrics = {k: v for k, v in _finite(metrics).items() if v is not None}
        step = self.step
        if cfg.strategy is Strategy.FSDP:
            self.saver.wait()  # the stage folder must be free of an earlier save's files
            staged = self.manager.stage(step) if ctx.is_main else None
            stage_dir = self._broadcast(staged.dir if staged else None)
            save_sharded(self.model, self.optimizer, os.path.join(stage_dir, DCP_DIRNAME))
            dist.barrier()
            if ctx.is_main:
                assert staged is not None
                staged.save_torch(ckpt_state.TRAINER_FILE, trainer)
                self._finish_save(staged, epoch, clean_metrics, meta, keep)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        model_sd = get_model_state_dict(self.model, options=opts)
        trainer["optimizer"] = get_optimizer_state_dict(self.model, self.optimizer, options=opts)
        if not ctx.is_main:
            return
        if cfg.checkpoint.async_save:
            # Copies are taken now, so training may change the live tensors while the thread writes.
            model_sd, trainer = _clone_to_cpu(model_sd), _clone_to_cpu(trainer)

        def write() -> CheckpointInfo:
            staged = self.manager.stage(step)
            try:
                staged.save_torch(ckpt_state.MODEL_FILE, model_sd)
                staged.save_torch(ckpt_state.TRAINER_FILE, trainer)
            except BaseException:
                self.manager.discard(staged)  # a full disk gets its space back; committed checkpoints stay
                raise
            return self._finish_save(staged, epoch, clean_metrics, meta, keep)

        if cfg.checkpoint.async_save:
            self.saver.submit(write)
        else:
            write()

    def _best_epoch_uri(self) -> str | None:
        """The best epoch's checkpoint when the run keeps it (early stopping with ``restore_best``)."""
        stop = self.cfg.early_stopping
        if stop is None or not stop.restore_best or self.stop_state.best_step < 0:
            return None
        return self.manager.uri_for(self.stop_state.best_step)

    def _finish_save(self, staged: Any, epoch: int, metrics: dict[str, float], meta: dict[str, Any],
                     keep: str | None = None) -> CheckpointInfo:
        info = self.manager.commit(staged, epoch=epoch, metrics=metrics, meta=meta)
        self.last_saved = info
        protected = [p for p in [self.resumed_from, keep, *self.cfg.protected_checkpoints] if p]
        self.manager.apply_retention(protected=protected)
        return info

    def _checkpoint(self, *, epoch: int, batch_index: int, train_loss: float | None = None) -> None:
        policy = self.cfg.checkpoint
        if self.xe is not None and policy.keep_best > 0 and policy.monitor.startswith("val_") and (
            self.val_step != self.step
        ):
            self.val_metrics, self.val_step = self.evaluate(), self.step
        metrics = {**self.val_metrics, **self.stop_metrics}
        metrics["train_loss"] = train_loss if train_loss is not None else self._global_train_loss()
        started = time.perf_counter()
        self.save(epoch=epoch, batch_index=batch_index, metrics=metrics)
        self.checkpoint_stall_s += time.perf_counter() - started
        self.checkpoints_written += 1
        self.last_saved_step = self.step

    # ---- early stopping -----------------------------------------------------------------------------------
    def _early_stopping_epoch(self, train_loss: float) -> bool:
        """
        Collective, at the end of an epoch: evaluate the early-stopping rows, update the stopper and say whether
        this epoch is the new best. The value is all-reduced, so every rank takes the same decision (a rank that
        stopped alone would leave the others waiting in a collective).
        """
        stop = self.cfg.early_stopping
        if stop is None:
            return False
        self.stop_metrics = self.evaluate_stop()
        key = monitored_key(stop)
        value = {"train_loss": train_loss, **self.val_metrics, **self.stop_metrics}.get(key)
        if value is None:
            from airflow_mlops.exceptions import MlopsConfigurationError

            raise MlopsConfigurationError(
                explain("Early stopping monitors a metric the run does not compute", expected=key,
                        received=sorted({"train_loss", *self.val_metrics, *self.stop_metrics}),
                        hint="monitor one of these (val_* names the metrics of the task).")
            )
        t = torch.tensor([float(value)], dtype=torch.float64, device=self.ctx.device)
        dist.all_reduce(t)
        agreed = float(t[0]) / self.ctx.world_size
        self.stop_state = update_stopping(stop, self.stop_state, agreed, epoch=self.epoch, step=self.step)
        flag = torch.tensor([1 if self.stop_state.stopped else 0], device=self.ctx.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if bool(flag.item()) != self.stop_state.stopped:  # pragma: no cover - would mean ranks diverged
            raise RuntimeError(f"rank {self.ctx.rank} disagrees on early stopping at epoch {self.epoch}")
        return stop.restore_best and self.stop_state.best_epoch == self.epoch

    def _early_stopping_summary(self) -> dict[str, Any]:
        stop, state = self.cfg.early_stopping, self.stop_state
        assert stop is not None
        return {"monitor": monitored_key(stop), "mode": str(stop.mode), "patience": stop.patience,
                "min_delta": stop.min_delta, "best": state.best, "best_epoch": state.best_epoch,
                "best_step": state.best_step, "stopped_epoch": state.stopped_epoch, "epochs_run": self.epoch,
                "reason": state.reason, "restore_best": stop.restore_best,
                "validation_rows": len(self.xs) if self.xs is not None else 0,
                "ranks": getattr(self, "stop_ranks", None)}

    def _report_early_stopping(self) -> None:
        from airflow_mlops.registry import tags

        summary = self._early_stopping_summary()
        self.say("Early stopping: %s after %d epoch(s); best %s %s at epoch %d%s", summary["reason"],
                 summary["epochs_run"], summary["monitor"],
                 "n/a" if summary["best"] is None else f"{summary['best']:.6g}", summary["best_epoch"],
                 "; the result is that epoch's checkpoint" if summary["restore_best"] and summary["best_epoch"]
                 else "")
        metrics = {tags.EARLY_STOP_BEST_EPOCH: float(summary["best_epoch"]),
                   tags.EARLY_STOP_EPOCHS_RUN: float(summary["epochs_run"]),
                   tags.EARLY_STOP_BEST: summary["best"]}
        if summary["stopped_epoch"] is not None:
            metrics[tags.EARLY_STOP_STOPPED_EPOCH] = float(summary["stopped_epoch"])
        self.metrics_sink.log(_finite(metrics), self.step)
        self.metrics_sink.set_tags({tags.EARLY_STOP_REASON: summary["reason"] or "",
                                    tags.EARLY_STOP_MONITOR: summary["monitor"]})

    # ---- the loop -----------------------------------------------------------------------------------------
    def train(self) -> TrainingResult:
        cfg, ctx = self.cfg, self.ctx
        t_start = time.perf_counter()
        samples = 0
        last_log = time.perf_counter()
        progress = StepTimer()
        train_loss = float("nan")
        self.say("Training %s: %d rows, %d epochs x %d steps, world size %d, strategy %s, device %s, backend %s",
                 cfg.run_name, self.n, cfg.epochs, self.steps_per_epoch, ctx.world_size, cfg.strategy.value,
                 ctx.device.type, dist.get_backend())
        sampler_seed = cfg.seed
        while self.epoch < cfg.epochs and self.step < self.total_steps and not self.stop_state.stopped:
            from torch.utils.data.distributed import DistributedSampler

            sampler = DistributedSampler(range(self.n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                         seed=sampler_seed, drop_last=False)
            sampler.set_epoch(self.epoch)
            order = torch.tensor(list(sampler), dtype=torch.long)
            for b in range(self.batch_index, self.steps_per_epoch):
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                step_started = time.perf_counter()
                xb, yb = self.x[idx].to(ctx.device), self.y[idx].to(ctx.device)
                self.optimizer.zero_grad(set_to_none=True)
                loss = self.loss_fn(_outputs(cfg.task, self.model(xb)), yb)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                loss_value = loss.item()
                self.loss_sum += loss_value
                self.loss_count += 1
                self.batch_index = b + 1
                samples += len(idx) * ctx.world_size
                progress.add(time.perf_counter() - step_started, len(idx) * ctx.world_size)
                due = (cfg.log_every_n_steps and self.step % cfg.log_every_n_steps == 0) or (
                    time.perf_counter() - last_log >= cfg.log_interval_s)
                if ctx.is_main and due:
                    last_log = time.perf_counter()
                    remaining = self.total_steps - self.step
                    evals_left = (cfg.epochs - self.epoch) if self.xe is not None else 0
                    eval_each = self.eval_s / max(self.epoch, 1) if self.epoch else 0.0
                    log.info("epoch %d/%d step %d/%d loss %.4f %.0f samples/s eta %s", self.epoch + 1, cfg.epochs,
                             self.step, self.total_steps, loss_value, progress.samples_per_s,
                             _duration(progress.step_s * remaining + eval_each * evals_left))
                    self.metrics_sink.log({"train_loss_step": loss_value}, self.step)
                if is_due(cfg.checkpoint, step=self.step, epoch_end=False, epochs_done=self.epoch):
                    self._checkpoint(epoch=self.epoch, batch_index=self.batch_index)
                if self.step >= self.total_steps and self.batch_index < self.steps_per_epoch:
                    break
            else:
                # The epoch ran to its end.
                train_loss = self._global_train_loss()
                self.epoch += 1
                self.batch_index = 0
                self.loss_sum, self.loss_count = 0.0, 0
                if self.xe is not None:
                    self.val_metrics, self.val_step = self.evaluate(), self.step
                improved = self._early_stopping_epoch(train_loss)
                epoch_metrics = {"train_loss": train_loss, **self.val_metrics, **self.stop_metrics}
                self.say("epoch %d/%d done: %s", self.epoch, cfg.epochs,
                         " ".join(f"{k} {v:.4f}" for k, v in epoch_metrics.items()))
                self.metrics_sink.log(_finite(epoch_metrics), self.step)
                # The best epoch is saved even when the policy would skip it (it is the run's result), unless a
                # step-based checkpoint of this very step holds its weights already.
                if is_due(cfg.checkpoint, step=self.step, epoch_end=True, epochs_done=self.epoch) or (
                    improved and self.last_saved_step != self.step
                ):
                    self._checkpoint(epoch=self.epoch, batch_index=0, train_loss=train_loss)
                if self.stop_state.stopped:
                    self.say("Early stopping after epoch %d/%d: %s did not improve by more than %g for %d "
                             "epoch(s); best %.6g at epoch %d", self.epoch, cfg.epochs,
                             monitored_key(cfg.early_stopping), cfg.early_stopping.min_delta,  # type: ignore[union-attr]
                             self.stop_state.bad_epochs, self.stop_state.best or float("nan"),
                             self.stop_state.best_epoch)
                continue
            break  # max_steps reached inside the epoch
        if self.loss_count:
            train_loss = self._global_train_loss()
        if self.val_step != self.step and self.xe is not None:
            self.val_metrics, self.val_step = self.evaluate(), self.step
        if cfg.early_stopping is not None:
            self.stop_state = finish_stopping(self.stop_state, epoch=self.epoch, epochs=cfg.epochs)
        if self.last_saved_step != self.step:
            self._checkpoint(epoch=self.epoch, batch_index=self.batch_index, train_loss=train_loss)
        self.saver.wait()
        if ctx.is_main:
            self.manager.wait_durable()  # the task succeeds with its checkpoints on the device
        duration = time.perf_counter() - t_start
        # Training throughput: the loop's own time, without evaluation and checkpoint stalls (reported apart).
        loop_s = duration - self.eval_s - self.checkpoint_stall_s
        throughput = samples / loop_s if loop_s > 0 else 0.0
        final = {"train_loss": train_loss, **self.val_metrics, **self.stop_metrics}
        self.metrics_sink.log(_finite({**final, "samples_per_second": throughput}), self.step)
        if cfg.early_stopping is not None:
            self._report_early_stopping()
        self.metrics_sink.close()  # raises when MLflow stayed away past its budget: Airflow retries
        # Every checkpoint is committed once all ranks pass here; then each node's first process reports, so
        # the launcher of every node (not only the one with global rank 0) gets a result.
        if cfg.early_stopping is not None:
            # Every rank's view of where it stopped, recorded in the result: they must agree.
            self.stop_ranks = self._all_gather_object([self.epoch, self.stop_state.stopped_epoch,
                                                       self.stop_state.best_epoch])
        uris = self._final_uris() if ctx.is_main else None
        last_uri, best_uri, kept_metrics = self._broadcast(uris)
        result = None
        if ctx.local_rank == 0:
            # The kept best epoch's weights are the result: report that epoch's metrics with them.
            result = self._result(kept_metrics or final, throughput, duration, last_uri, best_uri)
            write_result(cfg.output_dir, result)
            self.say("Training finished: %d steps in %.1fs (%.1f samples/s); checkpoint %s", self.step, duration,
                     throughput, result.checkpoint_uri)
        dist.barrier()
        return result  # type: ignore[return-value]

    def _final_uris(self) -> tuple[str, str | None, dict[str, Any] | None]:
        last = self.manager.latest(verify=False)
        if last is None:
            raise CheckpointError(explain("No committed checkpoint after training", expected="at least one",
                                          received=self.cfg.checkpoint_dir))
        kept = self._best_epoch_uri()
        if kept is not None:
            info = self.manager.info(kept)
            return last.uri, info.uri, info.metrics
        best = self.manager.best() if self.cfg.checkpoint.keep_best > 0 else None
        return last.uri, best.uri if best else None, None

    def _result(self, final: dict[str, float], throughput: float, duration: float, last_uri: str,
                best_uri: str | None) -> TrainingResult:
        return TrainingResult(
            checkpoint_uri=best_uri or last_uri,
            last_checkpoint_uri=last_uri,
            best_checkpoint_uri=best_uri,
            metrics=_finite(final),
            epochs=self.epoch,
            steps=self.step,
            world_size=self.ctx.world_size,
            samples_per_second=round(throughput, 3),
            duration_s=round(duration, 3),
            resumed_from=self.resumed_from,
            run_name=self.cfg.run_name,
            strategy=self.cfg.strategy.value,
            model_factory=self.cfg.model_factory,
            mlflow_run_id=self.cfg.mlflow_run_id,
            extra={"checkpoints_written": self.checkpoints_written,
                   "checkpoint_stall_s": round(self.checkpoint_stall_s, 4), "eval_s": round(self.eval_s, 4),
                   "device": self.ctx.device.type, "backend": dist.get_backend(),
                   "torch": torch.__version__,
                   **({"early_stopping": self._early_stopping_summary()} if self.cfg.early_stopping else {})},
        )


def run(config: TrainingConfig) -> TrainingResult | None:
    """Set up, train and tear down the process group; returns the result on rank 0."""
    trainer = Trainer(config)
    try:
        trainer.setup()
        return trainer.train()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
