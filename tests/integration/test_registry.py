"""Registration, promotion races, history and rollback against a real `mlflow server` on loopback."""

from __future__ import annotations

import threading
import time
import uuid

import numpy as np
import pandas as pd
import pytest

from airflow_mlops.exceptions import LineageIncompleteError, RegistryError
from airflow_mlops.lineage import LineageRecord
from airflow_mlops.registry.packaging import PackagedModel
from airflow_mlops.registry.service import RegistryService

pytestmark = pytest.mark.integration


def lineage() -> LineageRecord:
    return LineageRecord(
        data={"uri": "/d/train.csv", "digest": "sha256:ab", "rows": 10, "schema": {"x": "float64"},
              "validation": {"success": True}},
        code={"git_commit": "abc123", "git_dirty": False, "package_version": "0.1.0"},
        hyperparameters={"epochs": 1},
        framework={"model_class": "torch.nn.Sequential", "torch": "2.13.0", "python": "3.11", "cuda": "none"},
        training_image={"reference": "img:1", "digest": "sha256:cd"},
        packages={"artifact": "lineage/packages.txt", "digest": "sha256:ef"},
        orchestration={"dag_id": "d", "run_id": "r", "task_id": "t", "try_number": 1},
        checkpoint={"uri": "/c/step-0000000010"},
    )


@pytest.fixture
def service(mlflow_srv):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(mlflow_srv.url)
    return RegistryService(MlflowClient(mlflow_srv.url))


@pytest.fixture
def model_name() -> str:
    return f"m-{uuid.uuid4().hex[:8]}"


def _model():
    from airflow_mlops.training.models import tabular_mlp

    return tabular_mlp(in_features=3, hidden_sizes=(4,))


def _register(service: RegistryService, name: str, key: str, record: LineageRecord | None = None):
    client = service.client
    exp = client.get_experiment_by_name("registry-tests") or client.get_experiment(
        client.create_experiment("registry-tests"))
    run = client.create_run(exp.experiment_id)
    example = pd.DataFrame(np.zeros((2, 3), dtype="float32"), columns=["a", "b", "c"])
    meta = PackagedModel(model_spec={"factory": "airflow_mlops.training.models:tabular_mlp",
                                     "kwargs": {"in_features": 3, "hidden_sizes": [4]}},
                         task="binary", features=["a", "b", "c"])
    return service.register(name, _model(), run.info.run_id, record or lineage(), key, example, ["torch==2.13.0"],
                            meta=meta)


def test_retried_registration_leaves_one_version(service, model_name):
    first = _register(service, model_name, "dag/run-1/ckpt")
    second = _register(service, model_name, "dag/run-1/ckpt")
    assert first.version == second.version
    assert len(service.client.search_model_versions(f"name = '{model_name}'")) == 1
    assert first.tags["lineage.data.digest"] == "sha256:ab"


def test_incomplete_lineage_is_refused(service, model_name):
    record = lineage()
    record.data["digest"] = None
    record.code["git_commit"] = ""
    with pytest.raises(LineageIncompleteError) as err:
        _register(service, model_name, "dag/run-2/ckpt", record)
    assert err.value.missing == ["code.git_commit", "data.digest"]
    assert service.client.search_model_versions(f"name = '{model_name}'") == []


def test_retried_promotion_moves_alias_once(service, model_name):
    v1 = _register(service, model_name, "k1").version
    ok, moves, _ = service.promote(model_name, v1, ["champion"], "d/r1", "first", expected={"champion": None})
    assert ok and len(moves) == 1
    ok, moves, reason = service.promote(model_name, v1, ["champion"], "d/r1", "first", expected={"champion": None})
    assert ok and moves == [] and "already promoted" in reason
    assert [m["to_version"] for m in service.alias_history(model_name, "champion")] == [v1]


def test_racing_promotions_one_wins(service, model_name):
    v1 = _register(service, model_name, "k1").version
    service.promote(model_name, v1, ["champion"], "d/r0", "first", expected={"champion": None})
    v2 = _register(service, model_name, "k2").version
    v3 = _register(service, model_name, "k3").version
    barrier = threading.Barrier(2)
    results: dict[str, tuple] = {}

    def contender(version: str) -> None:
        barrier.wait()
        results[version] = service.promote(model_name, version, ["champion"], f"d/{version}", "beats v1",
                                           expected={"champion": v1})

    threads = [threading.Thread(target=contender, args=(v,)) for v in (v2, v3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [v for v, (ok, _, _) in results.items() if ok]
    losers = [v for v, (ok, _, _) in results.items() if not ok]
    assert len(winners) == 1 and len(losers) == 1
    assert service.version_for_alias(model_name, "champion").version == winners[0]
    history = service.alias_history(model_name, "champion")
    decisions = {(m["to_version"], m["action"]) for m in history}
    assert (winners[0], "promote") in decisions and (losers[0], "reject") in decisions
    assert "moved from v" in results[losers[0]][2]
    # Both released the lock: the next promoter takes it at once.
    started = time.monotonic()
    with service.lock(model_name, "next", wait_s=5):
        pass
    assert time.monotonic() - started < 5


def test_rollback_restores_previous_version(service, model_name):
    v1 = _register(service, model_name, "k1").version
    v2 = _register(service, model_name, "k2").version
    service.promote(model_name, v1, ["production"], "d/r1", "first")
    service.promote(model_name, v2, ["production"], "d/r2", "better")
    move = service.rollback(model_name, "production", "d/r3", "v2 misbehaves")
    assert (move.from_version, move.to_version, move.action) == (v2, v1, "rollback")
    assert service.version_for_alias(model_name, "production").version == v1
    assert [m["action"] for m in service.alias_history(model_name, "production")] == ["promote", "promote",
                                                                                       "rollback"]


def test_rollback_without_history_is_explained(service, model_name):
    v1 = _register(service, model_name, "k1").version
    service.promote(model_name, v1, ["production"], "d/r1", "first")
    with pytest.raises(RegistryError, match="Nothing to roll back"):
        service.rollback(model_name, "production", "d/r2", "why")



def test_registered_checkpoints_are_listed_for_retention(service, model_name):
    _register(service, model_name, "k1")
    assert service.registered_checkpoints(model_name) == ["/c/step-0000000010"]
    assert service.registered_checkpoints(f"{model_name}-none") == []
