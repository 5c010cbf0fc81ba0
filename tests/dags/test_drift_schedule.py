"""drift_monitor on its schedule: the window follows the run's data interval (a data-interval timetable), moved
back by the replay offset into the bundled history; no window Params needed."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.dag, pytest.mark.integration]


def test_the_quarter_that_ended_is_checked_40_years_back(airflow_db, mlflow_fresh, rainfall_source, tmp_path):
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import CronDataIntervalTimetable

    bag = DagBag(dag_folder=str(REPO / "dags" / "drift_monitor.py"))
    dag = bag.dags["drift_monitor"]
    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    # No champion on this fresh server: the run stops at the model, after the windows were cut from the interval.
    dr = dag.test(logical_date=pendulum.datetime(2026, 10, 1, tz="UTC"),
                  run_conf={"state_uri": str(tmp_path / "state.json")})
    assert (dr.data_interval_start.date().isoformat(), dr.data_interval_end.date().isoformat()) == (
        "2026-07-01", "2026-10-01")
    ti = dr.get_task_instance("prepare_current")
    assert str(ti.state) == "success"
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(XComModel).filter_by(dag_id=dr.dag_id, run_id=dr.run_id, task_id="prepare_current",
                                                 key="return_value").one()
        window = XComModel.deserialize_value(row)
    assert (window["start"], window["end"]) == ("1986-07-01", "1986-09-30")
    assert window["rows"] == 92
