"""Alias history tags are cross-checked against the registry: forged or malformed entries are never acted on."""

from __future__ import annotations

import json
import logging
import uuid

import pytest

from airflow_mlops.exceptions import RegistryError
from airflow_mlops.registry import tags
from airflow_mlops.registry.service import RegistryService

pytestmark = pytest.mark.integration


@pytest.fixture
def history(mlflow_srv):
    """A model with v1 -> v2 -> v3 promoted on ``production``: rollback must restore v2."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_srv.url)
    service = RegistryService(client)
    name = f"trust-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    exp = client.get_experiment_by_name("trust-tests") or client.get_experiment(
        client.create_experiment("trust-tests"))
    versions = []
    for _ in range(3):
        run_id = client.create_run(exp.experiment_id).info.run_id
        versions.append(client.create_model_version(name, source=f"runs:/{run_id}/model", run_id=run_id).version)
    for i, v in enumerate(versions):
        service.promote(name, v, ["production"], f"d/r{i}", "better")
    return service, name, [str(v) for v in versions]


def _forge(service, name, value, key="99999999999999999999"):
    service.client.set_registered_model_tag(name, f"{tags.ALIAS_MOVE_PREFIX}{key}", value)


def _move(frm, to, **kw):
    return json.dumps({"alias": "production", "from_version": frm, "to_version": to, "time": 1e9,
                       "dag_run": "x", "reason": "forged", "action": "rollback", **kw})


@pytest.mark.parametrize("forged", [
    ("1", "3"),            # claims v3 came after v1: rollback would restore v1
    ("3", "1"),            # claims the alias is on v1 now, which the registry contradicts
    ("3", "3"),            # a no-op move hiding the real one
    ("2", "77"),           # a version the registry does not hold
    (None, "3"),
])
def test_forged_move_does_not_change_what_rollback_restores(history, caplog, forged):
    service, name, (v1, v2, v3) = history
    _forge(service, name, _move(*forged))
    with caplog.at_level(logging.WARNING, logger="airflow_mlops.registry.service"):
        assert service.previous_version(name, "production") == v2
        move = service.rollback(name, "production", "d/rb", "v3 misbehaves")
    assert (move.from_version, move.to_version) == (v3, v2)
    assert service.version_for_alias(name, "production").version == v2
    assert all(m["reason"] != "forged" for m in service.alias_history(name, "production")) or forged == ("3", "3")
    if forged != ("3", "3"):
        assert "Ignoring alias history entry" in caplog.text


@pytest.mark.parametrize("bad", ["{not json", "[1, 2]", "null", _move("2", 3), _move("2", "3", time="soon"),
                                 _move("2", "3", action="exec"), _move(["2"], "3"), json.dumps({"alias": 1})])
def test_malformed_move_is_ignored_with_a_warning(history, caplog, bad):
    service, name, (v1, v2, v3) = history
    _forge(service, name, bad)
    with caplog.at_level(logging.WARNING, logger="airflow_mlops.registry.service"):
        history_moves = service.alias_history(name)
        move = service.rollback(name, "production", "d/rb", "v3 misbehaves")
    assert [m["to_version"] for m in history_moves] == [v1, v2, v3]
    assert move.to_version == v2
    assert "Ignoring malformed alias history tag" in caplog.text


def test_forged_move_in_the_middle_is_refused_not_acted_on(history):
    service, name, (v1, v2, v3) = history
    moves = sorted(k for k in service.client.get_registered_model(name).tags if k.startswith(tags.ALIAS_MOVE_PREFIX))
    # Between the real v1 -> v2 and v2 -> v3: the real last move no longer chains, so no previous version is
    # trusted and rollback asks for an explicit version instead of restoring v1.
    middle = moves[2][len(tags.ALIAS_MOVE_PREFIX):-1] + "0"
    _forge(service, name, _move("2", "1"), key=middle)
    target = service.previous_version(name, "production")
    assert target in (None, v2)
    if target is None:
        with pytest.raises(RegistryError, match="Nothing to roll back"):
            service.rollback(name, "production", "d/rb", "why")
        assert service.version_for_alias(name, "production").version == v3
