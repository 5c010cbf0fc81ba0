"""Early stopping: the stopper as a pure decision over per-epoch scores, its config, state and time split."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.training.config import DatasetSpec, EarlyStopping, MonitorMode, TrainingConfig
from airflow_mlops.training.early_stopping import (
    MAX_EPOCHS,
    MAX_STEPS,
    NO_IMPROVEMENT,
    StopState,
    finish,
    improves,
    monitored_key,
    split_newest,
    update,
)

NAN = float("nan")


def run(config: EarlyStopping, values: list[float], steps_per_epoch: int = 10) -> StopState:
    """Feed one value per epoch, as the trainer does, until the stopper says stop."""
    state = StopState()
    for epoch, value in enumerate(values, start=1):
        state = update(config, state, value, epoch=epoch, step=epoch * steps_per_epoch)
        if state.stopped:
            break
    return state


@pytest.mark.parametrize(
    ("values", "config", "expected"),
    [
        # (best_epoch, stopped_epoch, bad_epochs, best)
        ([0.9, 0.8, 0.7, 0.6], {"patience": 2}, (4, None, 0, 0.6)),  # keeps improving: never stops
        ([0.9, 0.7, 0.8, 0.75, 0.5], {"patience": 2}, (2, 4, 2, 0.7)),  # two epochs worse than 0.7: stop at 4
        ([0.9, 0.7, 0.8, 0.6, 0.9, 0.9], {"patience": 2}, (4, 6, 2, 0.6)),  # an improvement resets the count
        ([0.5, 0.6], {"patience": 1}, (1, 2, 1, 0.5)),  # patience 1: the first worse epoch stops
        ([0.9, 0.895, 0.89, 0.885], {"patience": 2, "min_delta": 0.01}, (1, 3, 2, 0.9)),  # too small to count
        ([0.9, 0.9, 0.9], {"patience": 2}, (1, 3, 2, 0.9)),  # equal is not better
        ([NAN, 0.8, NAN, NAN], {"patience": 2}, (2, 4, 2, 0.8)),  # NaN is the worst, never a best
        ([math.inf, NAN], {"patience": 2}, (0, 2, 2, None)),  # nothing finite: stops with no best
        ([0.6, 0.7, 0.8, 0.75], {"monitor": "val_auc", "patience": 2}, (3, None, 1, 0.8)),  # max mode by name
        ([0.6, 0.5, 0.4], {"monitor": "val_loss", "mode": "max", "patience": 2}, (1, 3, 2, 0.6)),  # declared mode
    ],
)
def test_stopper_table(values, config, expected):
    state = run(EarlyStopping(**config), values)
    assert (state.best_epoch, state.stopped_epoch, state.bad_epochs, state.best) == expected
    if state.stopped:
        assert state.reason == NO_IMPROVEMENT
    assert state.best_step == (state.best_epoch * 10 if state.best_epoch else -1)


def test_a_stopped_state_stays_stopped():
    cfg = EarlyStopping(patience=1)
    state = run(cfg, [0.5, 0.6])
    assert update(cfg, state, 0.1, epoch=3, step=30) == state


def test_finish_names_the_reason():
    cfg = EarlyStopping(patience=5)
    state = run(cfg, [0.5, 0.4, 0.45])
    assert finish(state, epoch=3, epochs=3).reason == MAX_EPOCHS
    assert finish(state, epoch=2, epochs=3).reason == MAX_STEPS
    stopped = run(EarlyStopping(patience=1), [0.5, 0.6])
    assert finish(stopped, epoch=2, epochs=3).reason == NO_IMPROVEMENT


def test_state_round_trips_through_json_and_resumes_counting():
    cfg = EarlyStopping(patience=3)
    whole = run(cfg, [0.9, 0.7, 0.8, 0.85, 0.9])
    # Crash after epoch 3, resume from what the checkpoint held, feed the rest.
    partial = run(cfg, [0.9, 0.7, 0.8])
    state = StopState.from_dict(json.loads(json.dumps(partial.to_dict())))
    for epoch, value in ((4, 0.85), (5, 0.9)):
        state = update(cfg, state, value, epoch=epoch, step=epoch * 10)
    assert state == whole and whole.stopped_epoch == 5 and whole.best_epoch == 2
    assert StopState.from_dict(None) == StopState()  # a checkpoint written without early stopping


@pytest.mark.parametrize(("value", "best", "mode", "delta", "expected"), [
    (0.5, None, MonitorMode.MIN, 0.0, True), (0.5, 0.5, MonitorMode.MIN, 0.0, False),
    (0.49, 0.5, MonitorMode.MIN, 0.0, True), (0.49, 0.5, MonitorMode.MIN, 0.02, False),
    (0.51, 0.5, MonitorMode.MAX, 0.0, True), (NAN, None, MonitorMode.MIN, 0.0, False),
    (-math.inf, 0.5, MonitorMode.MIN, 0.0, False),
])
def test_improves(value, best, mode, delta, expected):
    assert improves(value, best, mode, delta) is expected


def test_config_defaults_and_monitored_key():
    cfg = EarlyStopping()
    assert cfg.mode is MonitorMode.MIN and cfg.patience == 2 and cfg.restore_best and not cfg.splits
    assert monitored_key(cfg) == "val_loss"
    split = EarlyStopping(monitor="val_auc", validation_share=0.2, time_column="day")
    assert split.mode is MonitorMode.MAX and split.splits and monitored_key(split) == "stop_val_auc"
    assert split.validation_count(101) == 20
    assert EarlyStopping(validation_rows=7).validation_count(100) == 7
    assert monitored_key(EarlyStopping(monitor="train_loss", validation_rows=3)) == "train_loss"


@pytest.mark.parametrize("kwargs", [
    {"patience": 0}, {"patience": 1.5}, {"min_delta": -0.1}, {"min_delta": NAN}, {"validation_share": 0},
    {"validation_share": 1.0}, {"validation_rows": 0}, {"validation_share": 0.2, "validation_rows": 5},
    {"monitor": ""}, {"mode": "sideways"}, {"time_column": ""},
])
def test_config_rejects_nonsense(kwargs):
    with pytest.raises(MlopsConfigurationError):
        EarlyStopping(**kwargs)


def _training(early_stopping, eval_uri="/d/eval.csv"):
    data = DatasetSpec(train_uri="/d/train.csv", eval_uri=eval_uri, target_column="y", feature_columns=["a"])
    return TrainingConfig(dataset=data, checkpoint_dir="/tmp/c", output_dir="/tmp/o", early_stopping=early_stopping,
                          checkpoint={"keep_best": 0})


def test_training_config_takes_it_as_dict_and_round_trips():
    cfg = _training({"validation_share": 0.2, "time_column": "day", "patience": 3})
    assert isinstance(cfg.early_stopping, EarlyStopping) and cfg.early_stopping.patience == 3
    again = TrainingConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again.early_stopping == cfg.early_stopping
    assert _training(None).early_stopping is None


@pytest.mark.parametrize(("early_stopping", "eval_uri"), [
    ({"monitor": "val_loss"}, None),  # nothing to validate on
    ({"validation_rows": 5, "time_column": "y"}, None),  # the target is no time column
    ({"patiense": 3}, "/d/eval.csv"),  # unknown key
    ("yes", "/d/eval.csv"),
])
def test_training_config_rejects(early_stopping, eval_uri):
    with pytest.raises(MlopsConfigurationError):
        _training(early_stopping, eval_uri)


def test_training_config_accepts_train_loss_or_a_split_without_eval_set():
    assert _training({"monitor": "train_loss"}, None).early_stopping.monitor == "train_loss"
    assert _training({"validation_share": 0.25}, None).early_stopping.splits


def test_split_takes_the_newest_rows_by_time_not_table_order():
    df = pd.DataFrame({"day": [5, 1, 9, 3, 7, 2, 8, 4, 6, 10], "x": range(10)})
    older, newest = split_newest(df, 3, "day")
    assert list(newest["day"]) == [8, 9, 10] and sorted(older["day"]) == list(range(1, 8))
    # Without a time column the table's order is its time order.
    older, newest = split_newest(df, 2, None)
    assert list(newest["day"]) == [6, 10] and len(older) == 8
    # Equal times keep their table order (a stable sort): reruns split the same way.
    ties = pd.DataFrame({"day": [1, 2, 2, 2], "x": [0, 1, 2, 3]})
    assert list(split_newest(ties, 2, "day")[1]["x"]) == [2, 3]


@pytest.mark.parametrize(("rows", "column"), [(0, "day"), (10, "day"), (3, "when")])
def test_split_rejects(rows, column):
    with pytest.raises(MlopsConfigurationError):
        split_newest(pd.DataFrame({"day": range(10)}), rows, column)
