"""The registry lock under faults, against a real `mlflow server`: races, expired, paused and killed holders."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from airflow_mlops.exceptions import LockLostError, LockTimeoutError
from airflow_mlops.registry.lock import (
    LOCK_OWNER_TAG,
    LOCK_TOKEN_TAG,
    LOCK_TTL_TAG,
    RegistryLock,
    generation_name,
)
from airflow_mlops.registry.service import RegistryService

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def client(mlflow_srv):
    from mlflow import MlflowClient

    return MlflowClient(mlflow_srv.url)


@pytest.fixture
def model_name() -> str:
    return f"lock-{uuid.uuid4().hex[:8]}"


def _promoted(outcome) -> bool:
    return bool(outcome[0]) if isinstance(outcome, tuple) else bool(outcome.promoted)


def _versions(client, name: str, n: int) -> list[str]:
    exp = client.get_experiment_by_name("lock-tests") or client.get_experiment(client.create_experiment("lock-tests"))
    run = client.create_run(exp.experiment_id)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - exists from an earlier round
        pass
    return [client.create_model_version(name, source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id).version
            for _ in range(n)]


def _plant_expired_lock(client, name: str, ttl_s: float = 1.0) -> str:
    """What a promoter that crashed while holding the lock leaves behind: a generation nobody renews."""
    probe = RegistryLock(client, name, "probe")
    newest = probe._newest()
    generation = (newest[0] if newest else 0) + 1
    lock_name = generation_name(name, generation)
    client.create_registered_model(lock_name, tags={LOCK_OWNER_TAG: "crashed-promoter", LOCK_TOKEN_TAG: "dead",
                                                    LOCK_TTL_TAG: repr(ttl_s)})
    time.sleep(ttl_s + 0.2)
    return lock_name


def _holder(mlflow_srv, name: str, ttl: float, hold: float, tmp_path: Path, *extra: str):
    import subprocess

    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO / "tests"),
                                                       os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / f"holder-{uuid.uuid4().hex[:6]}.log"
    proc = subprocess.Popen([sys.executable, "-m", "mlops_testkit.faults", "hold-lock", "--url", mlflow_srv.url,
                             "--name", name, "--ttl", str(ttl), "--hold", str(hold), *extra],
                            env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    return proc, log


def _wait_for(log: Path, word: str, proc, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text() if log.exists() else ""
        if word in text:
            return text
        if proc.poll() is not None and word not in text:
            raise AssertionError(f"holder exited {proc.returncode} without {word!r}: {text[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {word!r} after {timeout}s: {log.read_text()[-2000:]}")


def _race(url: str, name: str, versions: list[str], champion: str | None, run_prefix: str):
    """Every version tries to take ``champion`` from the same holder at the same moment, one client each."""
    from mlflow import MlflowClient

    barrier = threading.Barrier(len(versions))
    outcomes: dict[str, object] = {}
    errors: list[BaseException] = []

    def race(version: str) -> None:
        service = RegistryService(MlflowClient(url))
        barrier.wait()
        try:
            outcomes[version] = service.promote(name, version, ["champion"], f"{run_prefix}-{version}",
                                                "beats the champion", expected={"champion": champion})
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(v,)) for v in versions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return outcomes, errors


def test_twenty_racing_promotions_over_an_expired_lock_have_one_winner_per_round(mlflow_srv, client, model_name):
    rounds, racers = 3, 20
    champion = None
    winners_per_round = []
    for round_no in range(rounds):
        versions = _versions(client, model_name, racers)
        _plant_expired_lock(client, model_name)
        outcomes, errors = _race(mlflow_srv.url, model_name, versions, champion, f"d/r{round_no}")
        assert not errors, errors[:3]
        winners = [v for v, outcome in outcomes.items() if _promoted(outcome)]
        winners_per_round.append(len(winners))
        assert len(winners) == 1, f"round {round_no}: winners {winners}"
        service = RegistryService(client)
        assert service.version_for_alias(model_name, "champion").version == winners[0]
        history = [m for m in service.alias_history(model_name, "champion") if m["to_version"] in versions]
        assert [m["to_version"] for m in history if m["action"] == "promote"] == winners
        assert (history[[m["action"] for m in history].index("promote")]["from_version"]) == champion
        assert sum(m["action"] == "reject" for m in history) == racers - 1
        champion = winners[0]
    print(f"\n[figures] {rounds} rounds x {racers} racing promotions over an expired lock: winners per round "
          f"{winners_per_round}")


def test_slow_live_holder_keeps_its_lock_by_renewing(client, model_name):
    ttl = 1.5
    holder = RegistryLock(client, model_name, "slow-holder", ttl_s=ttl).acquire()
    released_at: list[float] = []

    def work_then_release() -> None:
        time.sleep(ttl * 3)  # three ttls of work: only renewal keeps the lock
        holder.ensure_held()
        holder.release()
        released_at.append(time.monotonic())

    worker = threading.Thread(target=work_then_release)
    worker.start()
    contender = RegistryLock(client, model_name, "contender", ttl_s=ttl, wait_s=30).acquire()
    acquired_at = time.monotonic()
    worker.join()
    assert released_at and acquired_at >= released_at[0]
    contender.release()


def test_paused_holder_past_expiry_is_fenced_out(mlflow_srv, client, model_name, tmp_path):
    ttl = 2.0
    proc, log = _holder(mlflow_srv, model_name, ttl, 1.0, tmp_path)
    try:
        _wait_for(log, "HELD", proc)
        os.kill(proc.pid, signal.SIGSTOP)  # a GC pause, a frozen VM: the holder stops renewing
        started = time.monotonic()
        contender = RegistryLock(client, model_name, "contender", ttl_s=30, wait_s=30).acquire()
        took = time.monotonic() - started
        os.kill(proc.pid, signal.SIGCONT)
        proc.wait(timeout=60)
        text = log.read_text()
        # The woken holder learns it lost the lock and does not release the new holder's lock.
        assert proc.returncode == 3 and "LOST" in text, text
        contender.ensure_held()
        contender.release()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
    assert took <= ttl + 8  # expiry plus polling, on a loaded machine


def test_killed_holder_frees_the_model_within_its_ttl(mlflow_srv, client, model_name, tmp_path):
    ttl = 5.0
    proc, log = _holder(mlflow_srv, model_name, ttl, 600.0, tmp_path)
    _wait_for(log, "HELD", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic()
    contender = RegistryLock(client, model_name, "after-crash", wait_s=60).acquire()
    freed_after = time.monotonic() - killed
    contender.release()
    print(f"\n[figures] lock of a SIGKILLed holder (ttl {ttl:.0f}s) free after {freed_after:.1f}s")
    assert freed_after <= ttl + 5  # ttl after the last renewal, plus polling on a loaded machine


def test_six_minutes_of_clock_skew_do_not_break_a_fresh_lock(mlflow_srv, client, model_name, tmp_path):
    holder = RegistryLock(client, model_name, "holder", ttl_s=2.0).acquire()
    proc, log = _holder(mlflow_srv, model_name, 2.0, 0.0, tmp_path, "--clock-skew", "360", "--wait", "5")
    proc.wait(timeout=60)
    assert proc.returncode == 4 and "TIMEOUT" in log.read_text(), log.read_text()
    assert "holder" in log.read_text()  # the waiter names who holds the lock
    holder.ensure_held()
    holder.release()


def test_lost_lock_fails_the_block_that_held_it(client, model_name):
    lock = RegistryLock(client, model_name, "loser", ttl_s=1.0).acquire()
    lock._stop.set()  # renewals stop as in a paused process
    lock._renewer.join()
    time.sleep(1.2)
    winner = RegistryLock(client, model_name, "winner", ttl_s=30, wait_s=10).acquire()
    with pytest.raises(LockLostError, match="held by winner"):
        lock.release()
    winner.ensure_held()
    winner.release()
    holder = RegistryLock(client, model_name, "holder2").acquire()
    with pytest.raises(LockTimeoutError, match="held by holder2"):
        RegistryLock(client, model_name, "blocked", wait_s=0.5).acquire()
    holder.release()


def test_a_planted_lock_without_any_tags_still_expires(client, model_name):
    """A lock left by hand or by an older writer has no ttl tag: the contender's own ttl applies."""
    from airflow_mlops.registry.lock import generation_name

    client.create_registered_model(generation_name(model_name, 1))
    started = time.monotonic()
    lock = RegistryLock(client, model_name, "contender", ttl_s=1.5, wait_s=20).acquire()
    took = time.monotonic() - started
    assert lock.generation == 2 and 1.0 <= took <= 6
    lock.release()
