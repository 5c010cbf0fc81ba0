"""TriggerPolicyOperator outside Airflow's asset state store: the state file, and the choice of store."""

from __future__ import annotations

import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
from airflow.sdk import Asset

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.operators.drift import TriggerPolicyOperator

DRIFT = Asset("mlops://drift/unit")
PERFORMANCE = {"metric": "auc", "value": 0.8, "standard_error": 0.02, "mode": "max", "rows": 500, "degraded": False}


def _context() -> dict:
    return {"outlet_events": defaultdict(SimpleNamespace)}


def _operator(tmp_path, **kwargs) -> TriggerPolicyOperator:
    return TriggerPolicyOperator(task_id="trigger_policy", window_id=kwargs.pop("window_id", "w1"),
                                 window_end=kwargs.pop("window_end", "2013-01-06"), drift={"signals": []},
                                 performance=PERFORMANCE, state_uri=str(tmp_path / "state.json"),
                                 allowed_root=str(tmp_path), outlets=[DRIFT], **kwargs)


def test_without_an_asset_state_store_the_state_goes_to_the_file(tmp_path):
    context = _context()
    result = _operator(tmp_path).execute(context)
    assert result["action"] == "fine_tune" and result["state_store"] == f"file:{tmp_path / 'state.json'}"
    assert result["drop_test"]["verdict"] == "calibrating 1/2"
    assert context["outlet_events"][DRIFT].extra["action"] == "fine_tune"
    saved = json.loads((tmp_path / "state.json").read_text())
    assert saved["version"] == 2 and saved["windows_seen"] == 1 and saved["calibration"]["values"] == [[0.8, 0.02]]
    # the next window continues from the file
    result = _operator(tmp_path, window_id="w2", window_end="2013-01-13").execute(_context())
    assert result["drop_test"]["verdict"] == "calibrating 2/2"
    assert json.loads((tmp_path / "state.json").read_text())["windows_seen"] == 2


def test_asking_for_the_asset_store_without_one_is_an_error(tmp_path):
    with pytest.raises(MlopsConfigurationError, match="asset state store"):
        _operator(tmp_path, state_store="asset").execute(_context())
    with pytest.raises(MlopsConfigurationError, match="state_store"):
        _operator(tmp_path, state_store="db")
