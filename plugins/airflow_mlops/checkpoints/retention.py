"""Pure checkpoint decisions: when a checkpoint is due and which committed ones to keep or delete."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from airflow_mlops.checkpoints.policy import CheckpointPolicy, MonitorMode


@dataclass(frozen=True)
class CheckpointRecord:
    """What retention needs to know of one committed checkpoint."""

    uri: str
    step: int
    score: float | None = None


@dataclass(frozen=True)
class RetentionPlan:
    keep: list[str] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)


def _sort_key(score: float | None, mode: MonitorMode) -> float:
    """Smaller is better after this transform; NaN and missing scores rank worst."""
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return math.inf
    return float(score) if mode is MonitorMode.MIN else -float(score)


def plan_retention(
    records: Sequence[CheckpointRecord],
    *,
    keep_last: int,
    keep_best: int,
    mode: MonitorMode | str = MonitorMode.MIN,
    protected: Iterable[str] = (),
) -> RetentionPlan:
    """
    Keep the ``keep_last`` newest checkpoints, the ``keep_best`` best ones by score and every protected one.

    Ties in score go to the newer checkpoint. A checkpoint without a finite score is never "best".
    """
    mode = MonitorMode(mode) if not isinstance(mode, MonitorMode) else mode
    by_step = sorted(records, key=lambda r: r.step, reverse=True)
    keep: set[str] = {r.uri for r in by_step[: max(keep_last, 0)]}
    if keep_best > 0:
        scored = [r for r in by_step if math.isfinite(_sort_key(r.score, mode))]
        scored.sort(key=lambda r: (_sort_key(r.score, mode), -r.step))
        keep |= {r.uri for r in scored[:keep_best]}
    protected_set = {p.rstrip("/") for p in protected if p}
    keep |= {r.uri for r in records if r.uri.rstrip("/") in protected_set}
    ordered = [r.uri for r in sorted(records, key=lambda r: r.step)]
    return RetentionPlan(keep=[u for u in ordered if u in keep], delete=[u for u in ordered if u not in keep])


def best_record(records: Sequence[CheckpointRecord], mode: MonitorMode | str) -> CheckpointRecord | None:
    """The best checkpoint by score (newest on ties), or None when no checkpoint has a finite score."""
    mode = MonitorMode(mode) if not isinstance(mode, MonitorMode) else mode
    scored = [r for r in records if math.isfinite(_sort_key(r.score, mode))]
    if not scored:
        return None
    return min(scored, key=lambda r: (_sort_key(r.score, mode), -r.step))


def is_due(policy: CheckpointPolicy, *, step: int, epoch_end: bool, epochs_done: int) -> bool:
    """Whether to save now: after ``step`` optimizer steps, or at the end of epoch number ``epochs_done``."""
    if policy.every_n_steps is not None:
        return not epoch_end and step > 0 and step % policy.every_n_steps == 0
    assert policy.every_n_epochs is not None
    return epoch_end and epochs_done > 0 and epochs_done % policy.every_n_epochs == 0
