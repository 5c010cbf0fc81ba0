"""Early stopping under real torchrun (2 processes, gloo, CPU): both ranks stop together, the best epoch is kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from airflow_mlops.checkpoints import CheckpointManager, load_model, read_manifest
from airflow_mlops.training.config import CheckpointPolicy, DatasetSpec, EarlyStopping, TrainingConfig
from airflow_mlops.training.launcher import TorchrunLauncher

pytestmark = pytest.mark.integration

FEATURES = ["f0", "f1"]
ROWS, NEWEST = 200, 40


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """
    A time-ordered table, stored shuffled: the label follows ``3 f0 + 2 f1`` until day 160, then ``3 f0 - 2 f1``.
    Training learns f0 first, which helps on the newest 40 days, then f1, which hurts there: their loss falls
    for a few epochs and then rises. The stopper must find those rows by ``day``, not by their place in the file.
    """
    rng = np.random.default_rng(3)
    x = rng.normal(size=(ROWS, len(FEATURES)))
    day = np.arange(ROWS)
    sign = np.where(day < ROWS - NEWEST, 1.0, -1.0)
    label = (3 * x[:, 0] + 2 * sign * x[:, 1] + rng.normal(scale=0.3, size=ROWS) > 0).astype(int)
    df = pd.DataFrame(x, columns=FEATURES).assign(day=day, label=label).sample(frac=1.0, random_state=0)
    path = tmp_path_factory.mktemp("early") / "train.csv"
    df.to_csv(path, index=False)
    return path


def config(root: Path, table: Path, **kw) -> TrainingConfig:
    base = {
        "dataset": DatasetSpec(train_uri=str(table), target_column="label", feature_columns=FEATURES),
        "checkpoint_dir": str(root / "ckpt"), "output_dir": str(root / "out"), "epochs": 12, "batch_size": 20,
        "nproc_per_node": 2, "seed": 1, "learning_rate": 0.03, "model_kwargs": {"hidden_sizes": [8]},
        # The policy alone would keep only the last two; the stopper must keep the best epoch on its own.
        "checkpoint": CheckpointPolicy(every_n_epochs=1, keep_last=2, keep_best=0),
        "early_stopping": EarlyStopping(monitor="val_loss", patience=2, validation_rows=NEWEST, time_column="day"),
        "run_name": root.name,
    }
    return TrainingConfig(**(base | kw))


def newest_loss(uri: str, table: Path) -> float:
    df = pd.read_csv(table).sort_values("day").tail(NEWEST)
    model, _ = load_model(uri)
    with torch.no_grad():
        out = model(torch.tensor(df[FEATURES].to_numpy(), dtype=torch.float32)).squeeze(1).double()
    return float(torch.nn.functional.binary_cross_entropy_with_logits(
        out, torch.tensor(df["label"].to_numpy(), dtype=torch.float64)))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, table):
    root = tmp_path_factory.mktemp("ddp")
    lines: list[str] = []
    cfg = config(root, table)
    return cfg, TorchrunLauncher().run(cfg, log_line=lines.append, timeout_s=240), lines


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_stops_on_both_ranks_at_the_same_epoch_and_keeps_the_best(tmp_path, table, ddp_run, strategy):
    if strategy == "ddp":
        cfg, result, lines = ddp_run
    else:
        lines = []
        cfg = config(tmp_path, table, strategy=strategy)
        result = TorchrunLauncher().run(cfg, log_line=lines.append, timeout_s=240)
    stop = result.extra["early_stopping"]
    assert stop["reason"] == "no_improvement" and stop["monitor"] == "stop_val_loss", stop
    # The loss on the newest rows improved for more than one epoch, then stopped improving for `patience`.
    assert 2 <= stop["best_epoch"] and stop["stopped_epoch"] == stop["best_epoch"] + 2 < cfg.epochs, stop
    # Every rank ran the same epochs and stopped after the same one.
    assert stop["ranks"] == [[stop["stopped_epoch"], stop["stopped_epoch"], stop["best_epoch"]]] * 2, stop
    assert result.epochs == stop["stopped_epoch"] and stop["validation_rows"] == NEWEST
    steps_per_epoch = (ROWS - NEWEST) // 2 // cfg.batch_size
    assert result.steps == stop["stopped_epoch"] * steps_per_epoch
    # The result (what gets registered) is the best epoch's checkpoint, kept although retention keeps the last 2.
    best_uri = CheckpointManager(cfg.checkpoint_dir, cfg.checkpoint).uri_for(stop["best_step"])
    assert result.checkpoint_uri == result.best_checkpoint_uri == best_uri != result.last_checkpoint_uri
    manifest = read_manifest(best_uri)
    assert manifest["epoch"] == stop["best_epoch"]
    assert manifest["early_stopping"]["best_epoch"] == stop["best_epoch"]
    assert result.metrics["stop_val_loss"] == pytest.approx(stop["best"], rel=1e-9)
    # Its weights score the best loss on the newest rows; the last epoch's score worse.
    assert newest_loss(best_uri, table) == pytest.approx(stop["best"], rel=1e-4)
    assert newest_loss(result.last_checkpoint_uri, table) > stop["best"]
    assert any(f"Early stopping after epoch {stop['stopped_epoch']}/12" in line for line in lines), lines[-20:]
    assert any("held out for early stopping" in line for line in lines)


def test_resume_carries_the_stopper_state(tmp_path, table, ddp_run):
    """A run cut short one epoch after its best resumes with the stopper's count and stops where an uncut run does."""
    _, whole, _ = ddp_run
    cut = config(tmp_path / "cut", table, epochs=whole.extra["early_stopping"]["best_epoch"] + 1)
    first = TorchrunLauncher().run(cut, log_line=lambda _: None, timeout_s=240)
    assert first.extra["early_stopping"]["reason"] == "max_epochs"
    assert read_manifest(first.last_checkpoint_uri)["early_stopping"]["bad_epochs"] == 1
    cut.epochs = 12
    lines: list[str] = []
    second = TorchrunLauncher().run(cut, log_line=lines.append, timeout_s=240)
    assert second.resumed_from == first.last_checkpoint_uri
    assert any("Early stopping resumes" in line for line in lines)
    for key in ("stopped_epoch", "best_epoch", "best_step", "reason"):
        assert second.extra["early_stopping"][key] == whole.extra["early_stopping"][key], key
    assert second.extra["early_stopping"]["best"] == pytest.approx(whole.extra["early_stopping"]["best"], rel=1e-9)
    assert Path(second.checkpoint_uri).name == Path(whole.checkpoint_uri).name


def test_a_step_policy_keeps_the_best_epoch_too(tmp_path, table, ddp_run):
    """Checkpoints every 4 steps (an epoch's end is a step checkpoint): the best epoch's weights are still the
    result and survive retention (keep_last 2)."""
    _, whole, _ = ddp_run
    cfg = config(tmp_path, table, checkpoint=CheckpointPolicy(every_n_steps=4, keep_last=2, keep_best=0))
    result = TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=240)
    stop = result.extra["early_stopping"]
    assert stop["best_step"] == whole.extra["early_stopping"]["best_step"] and stop["stopped_epoch"] > stop["best_epoch"]
    assert Path(result.checkpoint_uri).name == Path(whole.checkpoint_uri).name != Path(result.last_checkpoint_uri).name
    assert newest_loss(result.checkpoint_uri, table) == pytest.approx(stop["best"], rel=1e-4)
