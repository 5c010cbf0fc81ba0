"""The torchrun command line, the worker environment and the rank prefixes of streamed log lines."""

from __future__ import annotations

import collections
import io
import os
import sys

from airflow_mlops.training.config import DatasetSpec, TrainingConfig
from airflow_mlops.training.launcher import TorchrunLauncher, build_torchrun_command, child_env, rdzv_id


def config(**kw):
    base = {"dataset": DatasetSpec(train_uri="/d/t.csv", target_column="y", feature_columns=["a"],
                                   eval_uri="/d/e.csv"),
            "checkpoint_dir": "/c", "output_dir": "/o", "run_name": "dag.task.manual__2024-01-01T00:00:00+00:00"}
    return TrainingConfig(**(base | kw))


def opt(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_single_node_command():
    cmd = build_torchrun_command(config(nproc_per_node=2), "/o/cfg.json", rdzv_endpoint="127.0.0.1:29400",
                                 log_dir="/o/logs")
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert opt(cmd, "--nproc-per-node") == "2"
    assert opt(cmd, "--nnodes") == "1"
    assert opt(cmd, "--node-rank") == "0"
    assert opt(cmd, "--rdzv-backend") == "c10d"
    assert opt(cmd, "--rdzv-endpoint") == "127.0.0.1:29400"
    assert opt(cmd, "--max-restarts") == "0"
    assert opt(cmd, "--tee") == "3"
    assert opt(cmd, "--local-addr") == "127.0.0.1"
    assert opt(cmd, "--log-dir") == "/o/logs"
    assert cmd[-4:] == ["-m", "airflow_mlops.training.worker", "--config", "/o/cfg.json"]
    assert ":" not in opt(cmd, "--rdzv-id") and "+" not in opt(cmd, "--rdzv-id")


def test_free_port_when_no_endpoint_is_given():
    cmd = build_torchrun_command(config(), "/o/cfg.json")
    host, port = opt(cmd, "--rdzv-endpoint").rsplit(":", 1)
    assert host == "127.0.0.1" and 0 < int(port) < 65536


def test_multi_node_command_uses_the_configured_endpoint():
    cfg = config(nnodes=2, node_rank=1, nproc_per_node=4, rdzv_endpoint="trainer-0.internal:29500")
    cmd = build_torchrun_command(cfg, "/o/cfg.json", rdzv_endpoint="127.0.0.1:1")
    assert opt(cmd, "--rdzv-endpoint") == "trainer-0.internal:29500"
    assert opt(cmd, "--nnodes") == "2" and opt(cmd, "--node-rank") == "1"
    assert "--local-addr" not in cmd
    assert opt(cmd, "--rdzv-id") == rdzv_id(cfg)


def test_child_env_puts_pythonpath_first(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTHONPATH", "/existing")
    env = child_env({"MLFLOW_TRACKING_URI": "http://x"}, [str(tmp_path)])
    assert env["PYTHONPATH"].split(os.pathsep) == [str(tmp_path), "/existing"]
    assert env["MLFLOW_TRACKING_URI"] == "http://x"
    assert env["PYTHONUNBUFFERED"] == "1"


def test_log_lines_get_rank_prefixes():
    launcher = TorchrunLauncher()
    raw = (b"[default0]:worker rank 2/4 pid 111 on host\n"
           b"[default1]:worker rank 3/4 pid 112 on host\n"
           b"[default0]:epoch 1/1 step 1/1\n"
           b"[default1]:Traceback (most recent call last):\n"
           b"agent message\n")
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=2)
    launcher._pump(io.BytesIO(raw), lines.append, tail, base_rank=2)
    assert lines == [
        "[rank2] worker rank 2/4 pid 111 on host",
        "[rank3] worker rank 3/4 pid 112 on host",
        "[rank2] epoch 1/1 step 1/1",
        "[rank3] Traceback (most recent call last):",
        "[torchrun] agent message",
    ]
    assert launcher.worker_pids == {2: 111, 3: 112}
    assert list(tail) == lines[-2:]
