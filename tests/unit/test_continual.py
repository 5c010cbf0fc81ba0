"""Table tests of the budgeted fine-tune plan: rows, replay, epochs and the time-split validation."""

from __future__ import annotations

import pytest

from airflow_mlops.continual import plan_fine_tune
from airflow_mlops.exceptions import MlopsConfigurationError


@pytest.mark.parametrize(
    ("window", "older", "budget", "expected"),
    [
        # (train_rows, validation_rows, new_rows, replay_rows, epochs)
        (1000, 10_000, 6400, (800, 200, 800, 800, 4)),  # budget pays 4 epochs of 800 new + 800 replay
        (1000, 10_000, 100_000, (800, 200, 800, 800, 8)),  # capped at max_epochs
        (1000, 300, 6400, (800, 200, 800, 300, 5)),  # little history: less replay, more epochs
        (1000, 0, 1000, (800, 200, 800, 0, 1)),  # the first window: no replay
        (1000, 10_000, 800, (800, 200, 400, 400, 1)),  # one epoch is over budget: fewer rows
        (40, 1000, 5000, (40, 0, 40, 40, 8)),  # too small to hold out 10 validation rows
    ],
)
def test_plan_table(window, older, budget, expected):
    plan = plan_fine_tune(window, older, budget)
    assert (plan.train_rows, plan.validation_rows, plan.new_rows, plan.replay_rows, plan.epochs) == expected
    assert plan.samples <= max(budget, plan.new_rows + plan.replay_rows)


@pytest.mark.parametrize(("window", "older", "budget"), [(0, 10, 100), (10, -1, 100), (10, 10, 0),
                                                         (10, 10, float("nan"))])
def test_plan_rejects_nonsense(window, older, budget):
    with pytest.raises(MlopsConfigurationError):
        plan_fine_tune(window, older, budget)


@pytest.mark.parametrize(("action", "budget", "expected"), [
    ("fine_tune", None, 0.03 * 4 * 1000), ("retrain", None, 4 * 1000), ("fine_tune", 500, 500)])
def test_budget_is_a_share_of_a_retrain(action, budget, expected):
    from airflow_mlops.continual import fine_tune_budget

    assert fine_tune_budget(action, 1000, 4, 0.03, budget) == pytest.approx(expected)


def _source(tmp_path):
    """Numeric batches 1..10 of 60 rows each (ties in time), keys in time order, stored shuffled."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = 600
    df = pd.DataFrame({"row_id": np.arange(rows), "batch": np.repeat(np.arange(1, 11), 60),
                       "x": rng.normal(size=rows), "y": rng.integers(0, 2, rows)})
    path = tmp_path / "source.csv"
    df.sample(frac=1.0, random_state=1).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(("budget", "patience"), [(None, 2), (200, 2), (None, 0)])
def test_prepare_fine_tune_writes_the_plan_and_the_workers_split_finds_its_newest_rows(tmp_path, budget, patience):
    import pandas as pd

    from airflow_mlops.continual import prepare_fine_tune
    from airflow_mlops.datasets import WindowSpec, cut_window
    from airflow_mlops.spec import ModelSpec
    from airflow_mlops.training.config import DatasetSpec, TrainingConfig
    from airflow_mlops.training.early_stopping import split_newest

    spec = ModelSpec.from_dict({"name": "m", "task": "binary", "features": ["x"], "target": "y",
                                "time_column": "batch", "time_type": "numeric", "key_column": "row_id"})
    source = _source(tmp_path)
    cut = cut_window(WindowSpec(source_uri=source, time_column="batch", start=9, end=10, key_column="row_id",
                                time_type="numeric"), str(tmp_path / "w"))
    window = {"start": 9, "end": 10, "train_uri": cut.train_uri}
    out = prepare_fine_tune(spec, window, source, max_epochs=8, fine_tune_cost=0.1, sample_budget=budget,
                            retrain_epochs=4, max_replay_rows=300, patience=patience,
                            data_root=str(tmp_path))
    plan = plan_fine_tune(cut.train_rows, 300, 0.1 * 4 * 600 if budget is None else budget)
    assert (out["epochs"], out["validation_rows"], out["new_rows"], out["replay_rows"]) == (
        plan.epochs, plan.validation_rows, plan.new_rows, plan.replay_rows)
    assert out["samples"] <= max(out["sample_budget"], out["new_rows"] + out["replay_rows"])
    table = pd.read_csv(out["train_uri"])
    assert len(table) == plan.replay_rows + plan.new_rows + plan.validation_rows
    assert list(table["row_id"]) == sorted(table["row_id"])  # stored in key order
    assert (table["batch"] < 9).sum() == plan.replay_rows
    # What the workers hold out is exactly the window's newest training rows (time, then key among ties).
    window_rows = pd.read_csv(cut.train_uri).sort_values(["batch", "row_id"])
    _, held_out = split_newest(table, plan.validation_rows, "batch")
    assert list(held_out["row_id"]) == list(window_rows["row_id"].tail(plan.validation_rows))
    if patience == 0:
        assert out["early_stopping"] is None
        return
    cfg = TrainingConfig(dataset=DatasetSpec(train_uri=out["train_uri"], target_column="y", feature_columns=["x"]),
                         checkpoint_dir=str(tmp_path / "c"), output_dir=str(tmp_path / "o"),
                         checkpoint={"keep_best": 0}, epochs=out["epochs"], early_stopping=out["early_stopping"])
    assert cfg.early_stopping.validation_rows == plan.validation_rows and cfg.early_stopping.time_column == "batch"


def test_the_drift_events_decision_sizes_the_training(tmp_path):
    """A refresh spends the decision's cost and replays four older rows per new one; a routine fine-tune one."""
    from airflow_mlops.continual import prepare_fine_tune
    from airflow_mlops.datasets import WindowSpec, cut_window
    from airflow_mlops.spec import ModelSpec

    spec = ModelSpec.from_dict({"name": "m", "task": "binary", "features": ["x"], "target": "y",
                                "time_column": "batch", "time_type": "numeric", "key_column": "row_id"})
    source = _source(tmp_path)
    cut = cut_window(WindowSpec(source_uri=source, time_column="batch", start=10, end=10, key_column="row_id",
                                time_type="numeric"), str(tmp_path / "w"))
    window = {"start": 10, "end": 10, "train_uri": cut.train_uri}
    routine = prepare_fine_tune(spec, window, source, fine_tune_cost=0.2, retrain_epochs=4, data_root=str(tmp_path))
    refresh = prepare_fine_tune(spec, window, source, fine_tune_cost=0.5, retrain_epochs=4, replay_ratio=4.0,
                                data_root=str(tmp_path))
    assert refresh["sample_budget"] == pytest.approx(0.5 * 4 * 600)
    assert routine["sample_budget"] == pytest.approx(0.2 * 4 * 600)
    assert routine["replay_rows"] == routine["train_rows"]
    assert refresh["replay_rows"] == 4 * refresh["train_rows"]
    assert refresh["samples"] > routine["samples"]


def test_the_request_carries_what_the_policy_allowed(mlflow_srv, monkeypatch):
    """The drift event's decision reaches the plan: its cost and whether it is a refresh (no champion: a retrain)."""
    from airflow_mlops.continual import resolve_request
    from airflow_mlops.spec import ModelSpec

    for key, value in mlflow_srv.env().items():
        monkeypatch.setenv(key, value)
    spec = ModelSpec.from_dict({"name": "no-champion-yet", "task": "binary", "features": ["x"], "target": "y",
                                "time_column": "batch", "time_type": "numeric"})
    extra = {"action": "fine_tune", "window_start": 9, "window_end": 10, "cost": 0.1, "refresh": True}
    request = resolve_request(spec, "/data/source.csv", {"action": "event"}, extra, data_root="/data")
    assert (request["cost"], request["refresh"]) == (0.1, True)
    assert (request["action"], request["parent_version"]) == ("retrain", None)
