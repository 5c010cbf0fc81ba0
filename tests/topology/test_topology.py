"""The production topology end to end: CeleryExecutor with two workers, PostgreSQL, MLflow server, data on S3."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from mlops_testkit.drift_state import DRIFT_CONF, policy_state_after_earlier_windows

pytestmark = [pytest.mark.topology, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MODEL = "rainfall"
DAG = "train_pipeline"
#: Twenty-one years, one row per process and step: two epochs of ~3000 steps on two torchrun processes,
#: each several seconds long, so that a worker can be killed partway through the second.
TRAIN_CONF = {"window_start": "1949-01-01", "window_end": "1969-12-31", "epochs": 2, "processes": 2,
              "batch_size": 1, "min_auc": 0.5}


def _hostnames(api, dag_id: str, run_id: str) -> dict[str, str]:
    return {ti["task_id"]: ti["hostname"] for ti in api.task_instances(dag_id, run_id) if ti["state"] == "success"}


def _weights(uri: str) -> dict:
    import io

    import torch

    from airflow_mlops.checkpoints.state import MODEL_FILE
    from airflow_mlops.hooks.storage import get_storage, join

    return torch.load(io.BytesIO(get_storage(uri).read_bytes(join(uri, MODEL_FILE))), weights_only=True,
                      map_location="cpu")


def _committed(checkpoint_dir: str) -> list:
    from airflow_mlops.checkpoints.manager import CheckpointManager

    return CheckpointManager(checkpoint_dir).committed()


def _versions(client) -> list:
    return client.search_model_versions(f"name='{MODEL}'")


def test_each_service_has_its_own_database_role_and_nothing_more(prod):
    import psycopg2

    v = prod.values
    host, port = prod.topo.addresses.postgres.split(":")
    roles = {"airflow": (v["AIRFLOW_DB_USER"], v["AIRFLOW_DB_PASSWORD"], v["AIRFLOW_DB"]),
             "mlflow": (v["MLFLOW_DB_USER"], v["MLFLOW_DB_PASSWORD"], v["MLFLOW_DB"])}
    for name, (user, password, db) in roles.items():
        with psycopg2.connect(host=host, port=port, user=user, password=password, dbname=db) as conn:
            cur = conn.cursor()
            cur.execute("SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user")
            assert cur.fetchone() == (False, False, False), name
            cur.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'")
            assert cur.fetchone()[0] > 10, f"{name}'s schema is not in its own database"
        conn.close()
        other = roles["mlflow" if name == "airflow" else "airflow"][2]
        with pytest.raises(psycopg2.OperationalError, match="permission denied"):
            psycopg2.connect(host=host, port=port, user=user, password=password, dbname=other)
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host=host, port=port, user=user, password="wrong", dbname=db)


def test_broker_and_mlflow_refuse_whoever_lacks_the_password(prod):
    """Redis and MLflow on loopback: without their passwords, no task queued and no model read."""
    import base64
    import urllib.error
    import urllib.request

    import redis

    v = prod.values
    host, port = prod.topo.addresses.redis.split(":")
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(host=host, port=int(port)).ping()
    assert redis.Redis(host=host, port=int(port), password=v["REDIS_PASSWORD"]).ping()

    def status(user: str | None, password: str | None) -> int:
        request = urllib.request.Request(f"{prod.topo.mlflow_url}/api/2.0/mlflow/registered-models/search")
        if user:
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert status(None, None) == 401
    assert status(v["MLFLOW_ADMIN_USER"], "wrong-password") == 401
    assert status(v["MLFLOW_ADMIN_USER"], v["MLFLOW_ADMIN_PASSWORD"]) == 200


@pytest.fixture(scope="module")
def reference_run(prod_env):
    """One uninterrupted train_pipeline run through the REST API: the weights the other runs must match."""
    api = prod_env.api
    api.wait_for_dag(DAG)
    api.unpause(DAG)
    started = time.monotonic()
    run_id, run = api.run_and_wait(DAG, TRAIN_CONF, timeout=900)
    return {"run_id": run_id, "run": run, "wall_s": time.monotonic() - started,
            "train": api.xcom(DAG, run_id, "train"), "hosts": _hostnames(api, DAG, run_id)}


def test_train_pipeline_spreads_over_both_workers_and_registers_lineage(prod_env, reference_run, artifacts_dir):
    api, run_id = prod_env.api, reference_run["run_id"]
    states = api.task_states(DAG, run_id)
    assert set(states.values()) <= {"success", "skipped"}, states
    hosts = reference_run["hosts"]
    # Every task ran on a Celery worker (the task's hostname is the worker's node name), and on both of them.
    assert set(hosts.values()) == set(prod_env.workers), hosts
    train = reference_run["train"]
    assert train["checkpoint_uri"].startswith(f"{prod_env.data_dir()}/checkpoints/{DAG}/")
    assert train["resumed_from"] is None

    champion = prod_env.mlflow().get_model_version_by_alias(MODEL, "champion")
    tags = champion.tags
    assert tags["lineage.orchestration.dag_id"] == DAG
    assert tags["lineage.orchestration.run_id"] == run_id
    assert tags["lineage.checkpoint.uri"] == train["checkpoint_uri"]
    assert tags["lineage.data.uri"].startswith(f"{prod_env.data_dir()}/")
    assert '"epochs":2' in tags["lineage.hyperparameters"].replace(" ", "")
    # Model artifacts went through the MLflow server to S3.
    objects = prod_env.s3().list_objects_v2(Bucket=prod_env.values["MLFLOW_BUCKET"], Prefix="artifacts/")
    assert objects.get("KeyCount", 0) > 0
    (artifacts_dir / "spread.json").write_text(json.dumps(
        {"run_id": run_id, "hostnames": hosts, "wall_s": round(reference_run["wall_s"], 1),
         "train_duration_s": train["duration_s"], "steps": train["steps"], "champion": champion.version}, indent=1))


def _tree(pid: int) -> set[int]:
    import psutil

    try:
        return {pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def _of_node(node: str) -> set[int]:
    """Live processes started by a worker: they carry its node name in their environment."""
    import psutil

    out = set()
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("MLOPS_NODE_NAME") == node:
                out.add(proc.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def _kill_tree(leader: int, node: str) -> set[int]:
    """SIGKILL a worker as a host failure would: stop every process of it first, so none escapes, then kill."""
    seen: set[int] = set()
    while True:
        found = (_tree(leader) | _of_node(node)) - seen
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        seen |= found
    for pid in seen:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(leader, 0)  # the worker is this process's child: reap it
    except ChildProcessError:
        pass
    return seen


def _objects(prod, prefix_uri: str) -> dict[str, tuple[str, int]]:
    """Every object under an s3:// prefix with its ETag and size."""
    from airflow_mlops.hooks.storage import split_s3

    bucket, prefix = split_s3(prefix_uri)
    pages = prod.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"]: (o["ETag"], o["Size"]) for page in pages for o in page.get("Contents", [])}


def _epoch(iso: str) -> float:
    import datetime as dt

    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _alive(pids: set[int]) -> set[int]:
    import psutil

    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def test_killed_worker_training_moves_to_the_other_worker_and_resumes_bitwise(prod_env, reference_run,
                                                                             artifacts_dir):
    api, topo = prod_env.api, prod_env.topo
    run_id = api.trigger(DAG, TRAIN_CONF)
    deadline = time.monotonic() + 600
    ti = {}
    while time.monotonic() < deadline:
        ti = api.task_instance(DAG, run_id, "train")
        if ti["state"] == "running" and ti.get("hostname"):
            break
        assert api.run(DAG, run_id)["state"] != "failed", api.explain(DAG, run_id)
        time.sleep(0.5)
    victim = ti["hostname"]
    assert victim in prod_env.workers, ti
    survivor = next(w for w in prod_env.workers if w != victim)
    train_started = time.monotonic()

    # Wait for the first committed checkpoint on S3, then kill partway through the next epoch.
    from airflow_mlops.operators.training import default_checkpoint_dir

    checkpoint_dir = default_checkpoint_dir(f"{prod_env.data_dir()}/checkpoints", DAG, run_id, "train")
    committed: list = []
    while not committed and time.monotonic() < deadline:
        committed = _committed(checkpoint_dir)
        time.sleep(0.2)
    assert committed, api.explain(DAG, run_id)
    first_commit = time.monotonic()
    epoch_s = reference_run["train"]["duration_s"] / TRAIN_CONF["epochs"]
    time.sleep(0.4 * epoch_s)
    at_kill = _committed(checkpoint_dir)
    leader = int(topo.processes[victim]["pid"])
    killed = _kill_tree(leader, victim)
    kill_time, kill_clock = time.monotonic(), time.time()
    topo.processes.pop(victim)
    total_steps = reference_run["train"]["steps"]
    last_at_kill = at_kill[-1]
    assert last_at_kill.step < total_steps, "training had finished before the kill"

    # No process of the killed worker is left, none writes a checkpoint after the kill.
    wait_until = time.monotonic() + 20
    while (_alive(killed) or _of_node(victim)) and time.monotonic() < wait_until:
        time.sleep(0.5)
    orphans = _alive(killed) | _of_node(victim)
    assert not orphans, f"processes of {victim} left after SIGKILL: {orphans}"
    # Nothing writes under the run's checkpoints from the kill until Airflow has failed the try (its
    # heartbeat stopped) and before the retry starts.
    written_after_kill = _objects(prod_env, checkpoint_dir)
    while time.monotonic() < deadline:
        ti = api.task_instance(DAG, run_id, "train")
        if ti["try_number"] > 1 or ti["state"] != "running":
            break
        time.sleep(0.5)
    noticed_after_s = time.monotonic() - kill_time
    assert _objects(prod_env, checkpoint_dir) == written_after_kill

    run = api.wait_for_run(DAG, run_id, timeout=900)
    assert run["state"] == "success", api.explain(DAG, run_id)
    tries = sorted(api.tries(DAG, run_id, "train"), key=lambda t: t["try_number"])
    assert [t["hostname"] for t in tries][:1] == [victim] and tries[-1]["hostname"] == survivor, tries
    assert tries[-1]["state"] == "success" and tries[-1]["try_number"] == 2, tries
    train = api.xcom(DAG, run_id, "train")
    assert train["resumed_from"] == last_at_kill.uri, (train["resumed_from"], last_at_kill.uri)
    assert train["steps"] == total_steps

    reference, resumed = _weights(reference_run["train"]["last_checkpoint_uri"]), _weights(train["last_checkpoint_uri"])
    import torch

    assert reference.keys() == resumed.keys()
    unequal = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert unequal == [], f"weights differ from the uninterrupted run: {unequal}"

    figures = {
        "run_id": run_id, "victim": victim, "survivor": survivor,
        "kill_after_train_start_s": round(kill_time - train_started, 2),
        "kill_after_first_commit_s": round(kill_time - first_commit, 2),
        "epoch_s_uninterrupted": round(epoch_s, 2),
        "committed_at_kill": [c.step for c in at_kill], "resumed_step": last_at_kill.step,
        "resumed_epoch": last_at_kill.epoch, "total_steps": total_steps,
        "processes_killed": len(killed), "orphans": len(orphans),
        "bitwise_equal_tensors": len(reference),
        "try_failed_after_kill_s": round(noticed_after_s, 1),
        "retry_started_after_kill_s": round(_epoch(tries[-1]["start_date"]) - kill_clock, 1),
        "run_done_after_kill_s": round(time.monotonic() - kill_time, 1),
        "tries": [{k: t[k] for k in ("try_number", "hostname", "state")} for t in tries],
    }
    (artifacts_dir / "kill_and_move.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps(figures))
    # Two workers again for the tests after this one.
    topo.start_worker(victim)


def test_drift_event_schedules_continual_learning_on_the_workers(prod_env, reference_run, tmp_path):
    api = prod_env.api
    client = prod_env.mlflow()
    for dag_id in ("drift_monitor", "continual_learning"):
        api.wait_for_dag(dag_id)
        api.unpause(dag_id)
    # Unpaused, drift_monitor also gets its scheduled run: let it, and whatever it triggers, finish first.
    api.settle(("drift_monitor", "continual_learning"))
    before = client.get_model_version_by_alias(MODEL, "champion")
    known = {r["dag_run_id"] for r in api.runs("continual_learning")}

    state_uri = policy_state_after_earlier_windows(f"{prod_env.data_dir()}/drift/topology-policy-state.json")
    run_id, _ = api.run_and_wait("drift_monitor", {**DRIFT_CONF, "state_uri": state_uri}, timeout=900)
    assert set(api.task_states("drift_monitor", run_id).values()) <= {"success", "skipped"}

    deadline = time.monotonic() + 180
    new_runs: list[dict] = []
    while not new_runs and time.monotonic() < deadline:
        new_runs = [r for r in api.runs("continual_learning") if r["dag_run_id"] not in known]
        time.sleep(2)
    assert new_runs, "the drift Asset event did not schedule continual_learning"
    assert new_runs[0]["run_type"] == "asset_triggered"
    cl_id = new_runs[0]["dag_run_id"]
    run = api.wait_for_run("continual_learning", cl_id, timeout=900)
    assert run["state"] == "success", api.explain("continual_learning", cl_id)
    hosts = _hostnames(api, "continual_learning", cl_id)
    assert hosts and set(hosts.values()) <= set(prod_env.workers), hosts
    assert set(_hostnames(api, "drift_monitor", run_id).values()) <= set(prod_env.workers)

    # The workers fine-tuned the champion from its checkpoint and registered the result; the gate then decides
    # (promoted: it is the new champion; rejected: the old one stays, and the rejection is recorded).
    registered = api.xcom("continual_learning", cl_id, "register")
    new = client.get_model_version(MODEL, registered["version"])
    assert new.tags.get("lineage.parent.version") == before.version  # fine-tuned from the old champion
    after = client.get_model_version_by_alias(MODEL, "champion")
    states = api.task_states("continual_learning", cl_id)
    if states.get("promote_production") == "success":
        assert after.version == new.version
    else:
        assert after.version == before.version and new.tags.get("mlops.gate.decision") == "reject", states


def test_mlflow_server_restarted_during_a_run_gives_exactly_one_new_version(prod_env, reference_run, artifacts_dir):
    api, topo = prod_env.api, prod_env.topo
    client = prod_env.mlflow()
    before = {v.version for v in _versions(client)}
    run_id = api.trigger(DAG, TRAIN_CONF)
    deadline = time.monotonic() + 600
    while api.task_instance(DAG, run_id, "train")["state"] != "running" and time.monotonic() < deadline:
        assert api.run(DAG, run_id)["state"] != "failed", api.explain(DAG, run_id)
        time.sleep(0.5)
    old_pid = int(topo.processes["mlflow"]["pid"])
    topo.stop("mlflow", grace=20)
    down_at = time.monotonic()
    time.sleep(3)
    topo.start_mlflow()
    outage_s = time.monotonic() - down_at
    assert int(topo.processes["mlflow"]["pid"]) != old_pid

    run = api.wait_for_run(DAG, run_id, timeout=900)
    assert run["state"] == "success", api.explain(DAG, run_id)
    client = prod_env.mlflow()
    new = [v for v in _versions(client) if v.version not in before]
    assert len(new) == 1, [(v.version, v.run_id) for v in new]
    assert new[0].tags["lineage.orchestration.run_id"] == run_id
    (artifacts_dir / "mlflow_restart.json").write_text(json.dumps(
        {"run_id": run_id, "outage_s": round(outage_s, 1), "new_versions": [v.version for v in new],
         "tries": {t: ti["try_number"] for t, ti in
                   ((ti["task_id"], ti) for ti in api.task_instances(DAG, run_id))}}, indent=1))
