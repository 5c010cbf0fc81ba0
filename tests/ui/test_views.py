"""Plain views of registry objects and the HTML built from them (no MLflow, no Airflow)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_mlops.ui import pages
from airflow_mlops.ui.views import aliases_by_environment, lineage_from_tags, model_summary, version_view


def _mv(version: str, aliases=(), tags=None):
    return SimpleNamespace(version=version, status="READY", creation_timestamp=1_760_000_000_000, run_id="r" + version,
                           source=f"models:/m-{version}", aliases=list(aliases), tags=tags or {})


@pytest.mark.parametrize(
    ("aliases", "expected"),
    [
        ({}, {"staging": None, "production": None, "champion": None}),
        ({"champion": "3"}, {"staging": None, "production": None, "champion": "3"}),
        ({"staging": 4, "production": "3", "champion": "3", "canary": "5"},
         {"staging": "4", "production": "3", "champion": "3", "canary": "5"}),
    ],
)
def test_aliases_by_environment(aliases, expected):
    out = aliases_by_environment(aliases)
    assert out == expected
    assert list(out)[:3] == ["staging", "production", "champion"]


def test_lineage_from_tags_groups_and_parses_json():
    tags = {
        "lineage.data.uri": "/data/w.parquet",
        "lineage.data.rows": "3650",
        "lineage.hyperparameters": '{"epochs":2,"window":["1949-01-01","1958-12-31"]}',
        "lineage.parent.version": "2",
        "lineage.code.git_dirty": "false",
        "eval.auc": "0.81",
        "mlops.source_key": "k",
    }
    out = lineage_from_tags(tags)
    assert out == {
        "code": {"git_dirty": "false"},
        "data": {"rows": "3650", "uri": "/data/w.parquet"},
        "hyperparameters": {"epochs": 2, "window": ["1949-01-01", "1958-12-31"]},
        "parent": {"version": "2"},
    }


def test_lineage_from_tags_keeps_unparsable_json_as_text():
    assert lineage_from_tags({"lineage.data.schema": "{not json"}) == {"data": {"schema": "{not json"}}


def test_version_view_and_model_summary():
    v2 = _mv("2", aliases=["champion"], tags={"eval.auc": "0.8", "mlops.gate.decision": "promote",
                                              "lineage.parent.version": "1", "lineage.data.uri": "/d"})
    v10 = _mv("10")
    view = version_view(v2)
    assert view["metrics"] == {"auc": 0.8}
    assert view["gate"] == {"decision": "promote"}
    assert view["parent_version"] == "1"
    assert view["lineage"]["data"] == {"uri": "/d"}
    model = SimpleNamespace(name="rainfall", description=None, last_updated_timestamp=1, aliases={"champion": "2"})
    summary = model_summary(model, [v2, v10])
    assert [v["version"] for v in summary["versions"]] == ["10", "2"]  # numeric, newest first
    assert summary["environments"]["champion"] == "2"


def test_pages_escape_every_value():
    evil = '<script>alert(1)</script>'
    v = version_view(_mv("1", aliases=["champion"], tags={"lineage.data.uri": evil, "mlops.gate.reason": evil}))
    model = {"name": "m<x>", "description": evil, "updated": 0, "environments": {"champion": "1"}, "versions": [v]}
    history = [{"alias": "champion", "from_version": None, "to_version": "1", "time": 1.0, "dag_run": evil,
                "reason": evil, "action": "promote"}]
    html = pages.model_page(model, history, "/mlops", lambda n, ver: "http://mlflow/#/models/x")
    index = pages.index_page([model], "/mlops")
    for doc in (html, index):
        assert "<script>" not in doc
    assert "&lt;script&gt;" in html
    assert 'href="/mlops/models/m%3Cx%3E"' in index
    assert 'data-version="1"' in html and "http://mlflow/#/models/x" in html


def test_index_page_without_models():
    assert "No registered model yet" in pages.index_page([], "/mlops")


def test_version_aliases_come_from_the_model_when_the_search_omits_them():
    model = SimpleNamespace(name="m", description="", last_updated_timestamp=1,
                            aliases={"champion": "2", "staging": "2", "production": "1"})
    summary = model_summary(model, [_mv("1"), _mv("2")])
    assert {v["version"]: v["aliases"] for v in summary["versions"]} == {
        "2": ["champion", "staging"], "1": ["production"]}


def test_a_rolled_back_version_is_shown_as_such():
    from airflow_mlops.ui.views import version_states

    v1 = version_view(_mv("1", aliases=["production"], tags={"mlops.gate.decision": "promote"}))
    v2 = version_view(_mv("2", tags={"mlops.gate.decision": "promote"}))
    v3 = version_view(_mv("3", tags={"mlops.gate.decision": "reject"}))
    history = [{"alias": "production", "from_version": None, "to_version": "1", "action": "promote"},
               {"alias": "production", "from_version": "1", "to_version": "2", "action": "promote"},
               {"alias": "production", "from_version": "2", "to_version": "1", "action": "rollback"}]
    assert version_states([v1, v2, v3], history) == {"1": "serving", "2": "rolled back", "3": "rejected"}


def test_reasons_are_rounded_for_people():
    assert pages.readable("auc=0.7718020541549953 vs champion 0.7") == "auc=0.7718 vs champion 0.7"


def test_plots_are_svg_with_a_point_per_version_and_a_mark_per_action():
    model = SimpleNamespace(name="m", description="", last_updated_timestamp=1, aliases={"champion": "2"})
    v1 = _mv("1", tags={"eval.auc": "0.70", "eval.dataset_digest": "sha256:aa", "mlops.task": "binary"})
    v2 = _mv("2", aliases=["champion"], tags={"eval.auc": "0.75", "eval.dataset_digest": "sha256:bb",
                                              "eval.champion_version": "1", "mlops.task": "binary"})
    v1.tags["eval_on.bb.auc"] = "0.71"
    summary = model_summary(model, [v1, v2])
    svg = pages.metric_plot(summary["versions"])
    assert svg.count('class="version-point"') == 2 and "<svg" in svg
    timeline = pages.timeline_plot([{"window": "a", "start": "1981-01-01", "drift_share": 0.5, "metric": "auc",
                                     "value": 0.7, "action": "none"},
                                    {"window": "b", "start": "1981-04-01", "drift_share": 0.9, "metric": "auc",
                                     "value": 0.6, "action": "fine_tune", "signals": "performance_drop"}])
    assert timeline.count('class="drift-bar"') == 2 and timeline.count('class="action"') == 1
