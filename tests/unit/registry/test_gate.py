"""Table tests of the promotion gate."""

from __future__ import annotations

import math

import pytest

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.registry.gate import GatePolicy, decide

AUC = GatePolicy(metric="auc", thresholds={"auc": 0.7}, min_improvement=0.0)
AUC_1PCT = GatePolicy(metric="auc", thresholds={"auc": 0.7}, min_improvement=0.01)
LOSS = GatePolicy(metric="log_loss", mode="min", thresholds={"log_loss": 0.6})
FIRST_REJECT = GatePolicy(metric="auc", first_model="reject")


@pytest.mark.parametrize(
    ("policy", "challenger", "champion", "promote", "reason_part"),
    [
        (AUC, {"auc": 0.80}, None, True, "first model"),
        (AUC, {"auc": 0.65}, None, False, "auc=0.6500 is not >= 0.7000"),
        (AUC, {"auc": 0.80}, {"auc": 0.79}, True, "vs champion"),
        (AUC, {"auc": 0.79}, {"auc": 0.79}, True, "vs champion"),
        (AUC, {"auc": 0.78}, {"auc": 0.79}, False, "does not beat champion"),
        (AUC_1PCT, {"auc": 0.795}, {"auc": 0.79}, False, "required > 0.7979"),
        (AUC_1PCT, {"auc": 0.80}, {"auc": 0.79}, True, "vs champion"),
        (AUC, {"auc": math.nan}, None, False, "no valid auc"),
        (AUC, {}, {"auc": 0.7}, False, "no valid auc"),
        (AUC, {"auc": 0.75}, {"auc": math.nan}, True, "vs champion"),
        (LOSS, {"log_loss": 0.5}, {"log_loss": 0.55}, True, "vs champion"),
        (LOSS, {"log_loss": 0.58}, {"log_loss": 0.55}, False, "does not beat champion"),
        (LOSS, {"log_loss": 0.7}, None, False, "log_loss=0.7000 is not <= 0.6000"),
        (FIRST_REJECT, {"auc": 0.9}, None, False, "first-model policy is 'reject'"),
    ],
)
def test_gate_table(policy, challenger, champion, promote, reason_part):
    decision = decide(challenger, champion, policy)
    assert decision.promote is promote
    assert reason_part in decision.reason
    assert not decision.reason.startswith(("promoted", "rejected")), "the decision is the flag; the reason says why"


def test_gate_records_every_check():
    decision = decide({"auc": 0.8, "log_loss": 0.4}, {"auc": 0.7}, GatePolicy(thresholds={"auc": 0.7, "log_loss": 0.5}))
    kinds = [(c["check"], c["metric"]) for c in decision.checks]
    assert kinds == [("threshold", "auc"), ("threshold", "log_loss"), ("champion", "auc")]
    assert all(c["passed"] for c in decision.checks)


@pytest.mark.parametrize("bad", [{"min_improvement": -0.1}, {"metric": ""}, {"mode": "sideways"},
                                 {"first_model": "maybe"}])
def test_gate_policy_rejects_bad_config(bad):
    with pytest.raises((MlopsConfigurationError, ValueError)):
        GatePolicy(**bad)
