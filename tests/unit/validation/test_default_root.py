"""Paths from Params are checked against the data folder by default; ``allowed_root="/"`` is the explicit opt-out."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest

from airflow_mlops.operators.drift import TriggerPolicyOperator
from airflow_mlops.operators.validation import DataValidationOperator
from airflow_mlops.validation import PathOutsideRootError, ValidationConfig
from airflow_mlops.validation.batches import default_data_root


class FakeTI:
    def __init__(self) -> None:
        self.pushed: dict = {}

    def xcom_push(self, key, value) -> None:
        self.pushed[key] = value


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("MLOPS_DATA_DIR", str(data))
    return data


def test_default_root_is_the_data_folder(data_dir):
    assert default_data_root() == str(data_dir)
    assert ValidationConfig("b.csv", "s.json").allowed_root == str(data_dir)
    assert ValidationConfig("b.csv", "s.json", allowed_root="/").allowed_root == "/"


@pytest.mark.parametrize("escape", ["../secret.csv", "link.csv"])
def test_validation_refuses_a_path_outside_the_data_folder_by_default(data_dir, tmp_path, suite_path, escape):
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    (data_dir / "link.csv").symlink_to(secret)  # a symlink out of the root
    quarantine = tmp_path / "quarantine"
    ti = FakeTI()
    op = DataValidationOperator(task_id="v", data_path=str(data_dir / escape), suite_path=suite_path,
                                quarantine_root=str(quarantine))
    with pytest.raises(PathOutsideRootError, match="outside the allowed root") as err:
        op.execute({"ti": ti})
    assert "hunter2" not in str(err.value) and "MLOPS_DATA_DIR" in str(err.value)
    assert not quarantine.exists() and ti.pushed == {}  # nothing read, copied or pushed


def test_explicit_opt_out_reads_anywhere(data_dir, tmp_path, window, suite_path):
    path = tmp_path / "elsewhere" / "w.parquet"
    path.parent.mkdir()
    window.to_parquet(path, index=False)
    with pytest.raises(PathOutsideRootError):
        DataValidationOperator(task_id="v", data_path=str(path), suite_path=suite_path).execute({"ti": FakeTI()})
    summary = DataValidationOperator(task_id="v", data_path=str(path), suite_path=suite_path,
                                     allowed_root="/").execute({"ti": FakeTI()})
    assert summary["success"]


def test_policy_state_outside_the_data_folder_is_refused_before_any_write(data_dir, tmp_path):
    outside = tmp_path / "elsewhere" / "deep" / "state.json"
    op = TriggerPolicyOperator(task_id="trigger_policy", window_id="w1", window_end="2013-01-06",
                               drift={"signals": []}, state_uri=str(outside), state_store="file")
    with pytest.raises(PathOutsideRootError, match="Policy state_uri"):
        op.execute({"outlet_events": defaultdict(SimpleNamespace)})
    assert not (tmp_path / "elsewhere").exists()
    escape = TriggerPolicyOperator(task_id="trigger_policy", window_id="w1", window_end="2013-01-06",
                                   drift={"signals": []}, state_uri=str(data_dir / ".." / "x.json"),
                                   state_store="file")
    with pytest.raises(PathOutsideRootError):
        escape.execute({"outlet_events": defaultdict(SimpleNamespace)})
    assert not (tmp_path / "x.json").exists()
