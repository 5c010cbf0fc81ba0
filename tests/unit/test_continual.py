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
