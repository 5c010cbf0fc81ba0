"""Retention and save-frequency decisions as table-driven tests over plain data."""

from __future__ import annotations

import math

import pytest

from airflow_mlops.checkpoints.retention import CheckpointRecord, best_record, is_due, plan_retention
from airflow_mlops.training.config import CheckpointPolicy


def recs(*scores):
    return [CheckpointRecord(f"ck/{i}", i, s) for i, s in enumerate(scores, start=1)]


@pytest.mark.parametrize(
    ("scores", "keep_last", "keep_best", "mode", "protected", "kept"),
    [
        # keep the last two only
        ((0.5, 0.4, 0.3, 0.2), 2, 0, "min", (), [3, 4]),
        # best by min plus the last two
        ((0.1, 0.4, 0.3, 0.2), 2, 1, "min", (), [1, 3, 4]),
        # best by max
        ((0.9, 0.4, 0.3, 0.2), 2, 1, "max", (), [1, 3, 4]),
        # NaN and missing scores are worst, never "best"
        ((float("nan"), None, 0.3, 0.2, 0.25), 2, 2, "min", (), [4, 5]),
        ((float("nan"), None, 0.3, 0.2, 0.25), 2, 2, "max", (), [3, 4, 5]),
        # ties go to the newer checkpoint
        ((0.1, 0.1, 0.5, 0.6, 0.7), 2, 1, "min", (), [2, 4, 5]),
        # protected ones stay whatever the policy says (trailing slash tolerated)
        ((0.5, 0.4, 0.3, 0.2), 2, 0, "min", ("ck/1/",), [1, 3, 4]),
        # fewer checkpoints than kept
        ((0.5,), 2, 1, "min", (), [1]),
        ((), 2, 1, "min", (), []),
        # all scores NaN: only the last ones
        ((math.nan, math.nan, math.nan), 2, 3, "min", (), [2, 3]),
    ],
)
def test_plan_retention(scores, keep_last, keep_best, mode, protected, kept):
    records = recs(*scores)
    plan = plan_retention(records, keep_last=keep_last, keep_best=keep_best, mode=mode, protected=protected)
    assert plan.keep == [f"ck/{i}" for i in kept]
    assert sorted(plan.keep + plan.delete) == sorted(r.uri for r in records)
    assert not set(plan.keep) & set(plan.delete)


def test_best_record():
    assert best_record(recs(0.3, 0.1, 0.2), "min").step == 2
    assert best_record(recs(0.3, 0.1, 0.2), "max").step == 1
    assert best_record(recs(None, float("nan")), "min") is None


@pytest.mark.parametrize(
    ("policy", "step", "epoch_end", "epochs_done", "due"),
    [
        (CheckpointPolicy(every_n_steps=5), 5, False, 0, True),
        (CheckpointPolicy(every_n_steps=5), 6, False, 0, False),
        (CheckpointPolicy(every_n_steps=5), 10, True, 1, False),  # step policies ignore epoch ends
        (CheckpointPolicy(every_n_epochs=2), 10, True, 1, False),
        (CheckpointPolicy(every_n_epochs=2), 20, True, 2, True),
        (CheckpointPolicy(every_n_epochs=2), 20, False, 2, False),
        (CheckpointPolicy(), 3, True, 1, True),
    ],
)
def test_is_due(policy, step, epoch_end, epochs_done, due):
    assert is_due(policy, step=step, epoch_end=epoch_end, epochs_done=epochs_done) is due
