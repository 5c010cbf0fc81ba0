"""What production does to a training task: SIGKILL of the task process, a storage outage, a full disk."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from airflow_mlops.checkpoints import CheckpointManager, load_model
from airflow_mlops.checkpoints.manifest import TMP_PREFIX
from airflow_mlops.exceptions import TrainingError
from airflow_mlops.training.config import CheckpointPolicy, DatasetSpec, TrainingConfig
from airflow_mlops.training.launcher import TRY_DIR_PREFIX, TorchrunLauncher
from mlops_testkit.faults import MARKER_ENV, flaky_proxy, kill_marked, wait_no_processes

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
FEATURES = ["f0", "f1", "f2", "f3"]


def _dataset(root: Path, rows: int) -> DatasetSpec:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, len(FEATURES))) * [1.0, 3.0, 0.5, 10.0]
    df = pd.DataFrame(x, columns=FEATURES)
    df["label"] = ((x[:, 0] - 0.3 * x[:, 1] + rng.normal(scale=0.5, size=rows)) > 0).astype(int)
    root.mkdir(parents=True, exist_ok=True)
    cut = rows * 3 // 4
    df.iloc[:cut].to_csv(root / "train.csv", index=False)
    df.iloc[cut:].to_csv(root / "eval.csv", index=False)
    return DatasetSpec(train_uri=str(root / "train.csv"), eval_uri=str(root / "eval.csv"), target_column="label",
                       feature_columns=FEATURES)


def _config(root: Path, data: DatasetSpec, **kw) -> TrainingConfig:
    base = {
        "dataset": data, "checkpoint_dir": str(root / "ckpt"), "output_dir": str(root / "out"), "epochs": 2,
        "batch_size": 16, "nproc_per_node": 2, "seed": 11, "learning_rate": 0.01, "log_every_n_steps": 1,
        "model_kwargs": {"hidden_sizes": [32, 16], "dropout": 0.1},
        "checkpoint": CheckpointPolicy(every_n_steps=10, keep_last=2, keep_best=1),
        "run_name": root.name,
    }
    return TrainingConfig(**(base | kw))


def _weights(uri: str) -> dict[str, torch.Tensor]:
    model, _ = load_model(uri)
    return model.state_dict()


def _assert_bitwise_equal(a: str, b: str) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> DatasetSpec:
    return _dataset(tmp_path_factory.mktemp("fault-data"), rows=2400)  # 1800 rows: 57 steps per epoch


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):
    """The uninterrupted run every faulted run must end equal to."""
    root = tmp_path_factory.mktemp("fault-reference")
    return TorchrunLauncher().run(_config(root, data), log_line=lambda _: None, timeout_s=300)


# ---- SIGKILL of the task process --------------------------------------------------------------------------
class TaskProcess:
    """The launcher in its own process, as an Airflow task runs it; every descendant carries a marker."""

    def __init__(self, config: TrainingConfig, workdir: Path, command: str = "train", **env_extra: str) -> None:
        self.marker = uuid.uuid4().hex
        path = workdir / f"config-{self.marker[:6]}.json"
        path.write_text(json.dumps(config.to_dict()))
        env = dict(os.environ, **{MARKER_ENV: self.marker}, **env_extra, PYTHONPATH=os.pathsep.join(
            [str(REPO / "plugins"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "mlops_testkit.faults", command, "--config", str(path)],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self.lines.put(raw.decode("utf-8", "replace").rstrip())
        self.lines.put("<EOF>")

    def wait_for(self, predicate, timeout: float = 120.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                continue
            self.seen.append(line)
            if line == "<EOF>":
                raise AssertionError("the task ended before the moment to kill it:\n" + "\n".join(self.seen[-30:]))
            if predicate(line):
                return line
        raise AssertionError("moment never came:\n" + "\n".join(self.seen[-30:]))

    def sigkill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _step(line: str) -> int:
    """The step of a rank 0 progress line (as the launcher prints it, or inside an Airflow log line)."""
    if "[rank0] epoch" not in line or " step " not in line:
        return -1
    return int(line.split("[rank0] epoch", 1)[1].split(" step ")[1].split("/")[0])


def _try_dirs_of(pid: int) -> list[str]:
    import glob
    import tempfile

    out = []
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{TRY_DIR_PREFIX}*")):
        try:
            if json.loads(Path(path, ".owner.json").read_text())["pid"] == pid:
                out.append(path)
        except (OSError, ValueError, KeyError):
            continue
    return out


def test_sigkill_of_the_task_process_leaves_no_orphans_and_the_retry_resumes_bitwise(tmp_path, data, reference):
    cfg = _config(tmp_path, data)
    moments = [
        ("torchrun starting", None),
        ("workers up", lambda line: "worker rank 1/2" in line),
        ("mid-epoch, step >= 25", lambda line: _step(line) >= 25),
    ]
    figures = []
    left_dirs: list[str] = []
    for name, predicate in moments:
        task = TaskProcess(cfg, tmp_path)
        task.wait_for(lambda line: line.startswith("[launcher] "))
        # The new try removed the killed one's folder before it started torchrun.
        assert not [d for d in left_dirs if os.path.exists(d)], "the previous try's temporary folder is still there"
        if predicate is not None:
            task.wait_for(predicate)
        left_dirs = _try_dirs_of(task.proc.pid)
        task.sigkill()
        killed = time.monotonic()
        orphans, waited = wait_no_processes(task.marker, timeout_s=10)
        kill_marked(task.marker)  # never leave them to the next test, whatever the assertion says
        figures.append((name, len(orphans), round(time.monotonic() - killed, 2)))
        assert orphans == [], f"{name}: processes outlived the task: {orphans}"
        assert left_dirs, "the killed try had a temporary folder"
    lines: list[str] = []
    result = TorchrunLauncher().run(cfg, log_line=lines.append, timeout_s=300)
    assert not [d for d in left_dirs if os.path.exists(d)]
    assert result.resumed_from is not None
    _assert_bitwise_equal(result.last_checkpoint_uri, reference.last_checkpoint_uri)
    assert result.metrics == reference.metrics
    print("\n[figures] SIGKILL of the task process: (moment, orphans left, seconds until none) "
          f"{figures}; retry resumed from {result.resumed_from} and ended bitwise equal")


def test_sigkill_of_an_airflow_task_running_the_operator(airflow_db, tmp_path, data, reference):
    """The same through ``dag.test()``: the task process dies right after a commit, then the DAG runs again."""
    cfg = _config(tmp_path, data)
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(REPO / "tests" / "mlops_testkit" / "fault_dag.py", dags)
    env = {"AIRFLOW__CORE__DAGS_FOLDER": str(dags)}
    task = TaskProcess(cfg, tmp_path, command="train-dag", **env)
    task.wait_for(lambda line: "[rank0] Committed checkpoint" in line and _committed_step(line) >= 20, timeout=300)
    left_dirs = _try_dirs_of(task.proc.pid)
    task.sigkill()
    orphans, waited = wait_no_processes(task.marker, timeout_s=10)
    kill_marked(task.marker)
    assert orphans == [], f"processes outlived the Airflow task: {orphans}"
    assert left_dirs  # the operator's output folder and the launcher's try folder
    retry = TaskProcess(cfg, tmp_path, command="train-dag", **env)
    state = retry.wait_for(lambda line: line.startswith("STATE "), timeout=300)
    assert state.startswith("STATE success"), "\n".join(retry.seen[-40:])
    assert any("Resuming from" in line for line in retry.seen)
    assert not [d for d in left_dirs if os.path.exists(d)]
    latest = CheckpointManager(cfg.checkpoint_dir).latest()
    _assert_bitwise_equal(latest.uri, reference.last_checkpoint_uri)
    print(f"\n[figures] SIGKILL of an Airflow task (dag.test) after a commit: orphans left {len(orphans)} "
          f"(gone after {waited:.2f}s); the next run resumed and ended bitwise equal")


def _committed_step(line: str) -> int:
    return int(line.split("(step ")[1].split(",")[0]) if "(step " in line else -1


def test_a_stale_writer_of_an_earlier_try_is_fenced_out(tmp_path, data):
    from airflow_mlops.checkpoints.manager import claim_lease
    from airflow_mlops.exceptions import CheckpointFencedError

    root = tmp_path / "ckpt"
    old = CheckpointManager(str(root), CheckpointPolicy(every_n_steps=1, keep_last=2, keep_best=0),
                            lease_token=claim_lease(str(root), owner="try 1"))
    staged = old.stage(1)
    staged.save_bytes("weights.bin", b"x" * 10)
    old.commit(staged, epoch=0)
    new_token = claim_lease(str(root), owner="try 2")  # the retry starts
    staged = old.stage(2)
    staged.save_bytes("weights.bin", b"y" * 10)
    with pytest.raises(CheckpointFencedError, match="newer try"):
        old.commit(staged, epoch=0)
    with pytest.raises(CheckpointFencedError):
        old.apply_retention()
    new = CheckpointManager(str(root), lease_token=new_token)
    assert [i.step for i in new.committed()] == [1]
    assert not [n for n in os.listdir(root) if n.startswith(TMP_PREFIX)]


# ---- a full disk ------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs: a real file system that answers ENOSPC (mounting needs root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_names_the_root_cause_and_keeps_the_previous_checkpoint(tmp_path, data, small_disk):
    # ~0.8 MB per checkpoint (weights and two Adam moments of 67k parameters): the third one does not fit.
    cfg = _config(tmp_path, data, checkpoint_dir=str(small_disk / "ckpt"),
                  model_kwargs={"hidden_sizes": [256, 256]}, checkpoint=CheckpointPolicy(every_n_steps=5, keep_last=2,
                                                                                          keep_best=0))
    with pytest.raises(TrainingError) as err:
        TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=300)
    text = str(err.value)
    assert "rank 0 failed first with OSError: [Errno 28] No space left on device" in text, text[:2000]
    manager = CheckpointManager(cfg.checkpoint_dir)
    latest = manager.latest(verify=True)
    assert latest is not None and latest.step == 10  # the one before the failed write, intact
    assert not [n for n in os.listdir(cfg.checkpoint_dir) if n.startswith(TMP_PREFIX)]
    print(f"\n[figures] full disk: {text.splitlines()[0][:160]}")


# ---- a storage outage -------------------------------------------------------------------------------------
def _s3_config(tmp_path: Path, data: DatasetSpec, bucket: str) -> TrainingConfig:
    return _config(tmp_path, data, checkpoint_dir=f"s3://{bucket}/{tmp_path.name}/ckpt")


def _outage_run(s3_srv, tmp_path, data, seconds: float, budget_s: float | None):
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    s3_srv.create_bucket(bucket)
    cfg = _s3_config(tmp_path, data, bucket)
    with flaky_proxy(s3_srv.endpoint_url) as proxy:
        env = {**s3_srv.env(), "AWS_ENDPOINT_URL": proxy.url}
        if budget_s is not None:
            env["MLOPS_STORAGE_RETRY_BUDGET_S"] = str(budget_s)
        lines: list[str] = []
        outage: dict[str, float] = {}

        def log_line(line: str) -> None:
            lines.append(line)
            if not outage and "Committed checkpoint" in line:
                outage["start"] = time.monotonic()
                proxy.outage(seconds)

        started = time.monotonic()
        try:
            result = TorchrunLauncher().run(cfg, log_line=log_line, timeout_s=300, extra_env=env)
            error = None
        except TrainingError as exc:
            result, error = None, exc
        took = time.monotonic() - started
        if proxy.refusing:
            proxy.restore()
    return result, error, lines, proxy, took


def test_storage_refusing_connections_for_20_s_is_ridden_out(s3_env, s3_srv, tmp_path, data, reference):
    result, error, lines, proxy, took = _outage_run(s3_srv, tmp_path, data, 20.0, None)
    assert error is None, str(error)[:3000]
    retries = [line for line in lines if "retrying in" in line]
    assert retries and f"127.0.0.1:{proxy.port}" in retries[0]
    _assert_bitwise_equal(result.last_checkpoint_uri, reference.last_checkpoint_uri)
    print(f"\n[figures] S3 outage 20s: training succeeded in {took:.0f}s with {len(retries)} retry warning(s)")


def test_storage_outage_longer_than_the_budget_fails_with_the_storage_error(s3_env, s3_srv, tmp_path, data):
    result, error, lines, proxy, took = _outage_run(s3_srv, tmp_path, data, 60.0, budget_s=4.0)
    assert result is None and error is not None
    text = str(error)
    assert "rank 0 failed first with" in text
    assert "failed for s3://" in text and f"127.0.0.1:{proxy.port}" in text, text[:3000]
    assert took < 60
    print(f"\n[figures] S3 outage 60s with a 4s budget: task failed after {took:.0f}s: "
          f"{text.splitlines()[0][:240]}")



# ---- an MLflow outage -------------------------------------------------------------------------------------
def test_mlflow_away_longer_than_the_budget_fails_clearly_and_the_retry_succeeds(mlflow_srv, tmp_path, data):
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_srv.url)
    exp = client.get_experiment_by_name("faults") or client.get_experiment(client.create_experiment("faults"))
    run_id = client.create_run(exp.experiment_id).info.run_id
    cfg = _config(tmp_path, data, mlflow_run_id=run_id, epochs=1)
    with flaky_proxy(mlflow_srv.url) as proxy:
        env = {"MLFLOW_TRACKING_URI": proxy.url, "MLOPS_MLFLOW_RETRY_BUDGET_S": "6",
               "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
        lines: list[str] = []
        marks: dict[str, float] = {}

        def log_line(line: str) -> None:
            lines.append(line)
            if not marks and "Committed checkpoint" in line:
                marks["outage"] = time.monotonic()
                proxy.refuse()  # the MLflow server is gone for longer than the run's budget
            if marks and _step(line) > 0:
                marks["last_step"] = time.monotonic()

        with pytest.raises(TrainingError) as err:
            TorchrunLauncher().run(cfg, log_line=log_line, timeout_s=300, extra_env=env)
        failed_after = time.monotonic() - marks["outage"]
        text = str(err.value)
        assert "rank 0 failed first with TrackingUnavailableError" in text and proxy.url in text, text[:3000]
        warnings = [line for line in lines if "is not answering" in line]
        assert warnings and proxy.url in warnings[0]
        # Training was not held up by the outage: every step ran.
        assert any(f"step {cfg.epochs * 57}/{cfg.epochs * 57}" in line for line in lines)
        proxy.restore()
        again = TorchrunLauncher().run(cfg, log_line=lambda _: None, timeout_s=300, extra_env=env)
    assert again.resumed_from == again.last_checkpoint_uri  # nothing left to train: it only reports
    logged = client.get_run(run_id).data.metrics
    assert "val_loss" in logged and "samples_per_second" in logged
    print(f"\n[figures] MLflow refusing connections past a 6s budget: training ran all steps, the task failed "
          f"{failed_after:.0f}s after the outage began; the retry succeeded")
