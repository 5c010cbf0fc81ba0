"""Kubernetes manifests of a multi-node torchrun run: rendered, consistent, and equal to the checked-in example."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from airflow_mlops.exceptions import MlopsConfigurationError
from airflow_mlops.training.config import TrainingConfig
from airflow_mlops.training.k8s import (
    COMPLETION_INDEX_ANNOTATION,
    KubernetesTrainingSpec,
    dns_name,
    kubectl_commands,
    render_manifests,
    to_yaml,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CONFIG = REPO / "docker" / "k8s" / "training-config.example.json"
EXAMPLE_MANIFESTS = REPO / "docker" / "k8s" / "training-job.yaml"


def _config(**overrides) -> TrainingConfig:
    data = json.loads(EXAMPLE_CONFIG.read_text())
    data.update(overrides)
    return TrainingConfig.from_dict(data)


def _by_kind(manifests):
    return {m["kind"]: m for m in manifests}


def test_checked_in_manifests_are_what_the_renderer_produces():
    rendered = render_manifests(_config(), KubernetesTrainingSpec(image="airflow-mlops:0.1.0"))
    assert list(yaml.safe_load_all(EXAMPLE_MANIFESTS.read_text())) == rendered, (
        "docker/k8s/training-job.yaml is stale: regenerate it with the command in its header"
    )


def test_indexed_job_headless_service_and_rendezvous_agree():
    spec = KubernetesTrainingSpec(image="reg.example/airflow-mlops:1", namespace="ml", rdzv_port=29500)
    m = _by_kind(render_manifests(_config(nnodes=3), spec))
    job, svc, cm = m["Job"], m["Service"], m["ConfigMap"]
    name = job["metadata"]["name"]
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 3
    assert job["spec"]["backoffLimit"] == 0
    pod = job["spec"]["template"]["spec"]
    # Pod hostnames <job>-<index> live under the headless Service named like the subdomain.
    assert svc["spec"]["clusterIP"] == "None" and svc["spec"]["publishNotReadyAddresses"] is True
    assert pod["subdomain"] == svc["metadata"]["name"] == name
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
    assert svc["spec"]["ports"][0]["port"] == 29500

    container = pod["containers"][0]
    cmd = container["command"]
    endpoint = f"{name}-0.{name}.ml.svc.cluster.local:29500"
    assert cmd[:3] == ["python", "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--rdzv-backend") + 1] == "c10d"
    assert cmd[cmd.index("--rdzv-endpoint") + 1] == endpoint
    assert cmd[cmd.index("--nnodes") + 1] == "3" and cmd[cmd.index("--nproc-per-node") + 1] == "2"
    assert cmd[cmd.index("--node-rank") + 1] == "$(NODE_RANK)"
    assert "--local-addr" not in cmd  # pods meet on their cluster addresses, not loopback
    node_rank = next(e for e in container["env"] if e["name"] == "NODE_RANK")
    assert COMPLETION_INDEX_ANNOTATION in node_rank["valueFrom"]["fieldRef"]["fieldPath"]

    # The config every pod reads is a valid TrainingConfig naming pod 0 as rendezvous.
    mounted = TrainingConfig.from_dict(json.loads(cm["data"]["training_config.json"]))
    assert mounted.rdzv_endpoint == endpoint and mounted.nnodes == 3
    config_volume = next(v for v in pod["volumes"] if v["name"] == "training-config")
    assert config_volume["configMap"]["name"] == cm["metadata"]["name"]
    assert cmd[-1].startswith("/etc/airflow-mlops/") and cmd[-1].endswith("training_config.json")


def test_gpus_secrets_and_shared_volume():
    spec = KubernetesTrainingSpec(image="img", gpus_per_node=4, secret_env=["s3-credentials"],
                                  shared_volume_claim="training-rwx", service_account="trainer",
                                  env={"MLFLOW_TRACKING_URI": "http://mlflow.ml:5000"})
    cfg = _config(checkpoint_dir="/shared/ckpt/run1", output_dir="/shared/out/run1")
    pod = _by_kind(render_manifests(cfg, spec))["Job"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert container["envFrom"] == [{"secretRef": {"name": "s3-credentials"}}]
    assert {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow.ml:5000"} in container["env"]
    assert {"name": "shared", "persistentVolumeClaim": {"claimName": "training-rwx"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "trainer"
    assert "secret" not in to_yaml([{"env": container["env"]}]).lower()  # credentials stay in the Secret


@pytest.mark.parametrize(
    ("overrides", "spec_kwargs", "message"),
    [
        ({"checkpoint_dir": "/tmp/ckpt"}, {}, "cannot reach"),
        ({"dataset": {**json.loads(EXAMPLE_CONFIG.read_text())["dataset"], "train_uri": "/data/w.parquet"}}, {},
         "cannot reach"),
        ({"checkpoint_dir": "/elsewhere/ckpt"}, {"shared_volume_claim": "rwx"}, "cannot reach"),
        ({}, {"namespace": "Bad_NS"}, "DNS-1123"),
        ({}, {"memory": "lots"}, "quantity"),
        ({}, {"gpus_per_node": -1}, "gpus_per_node"),
        ({}, {"image": ""}, "image"),
    ],
)
def test_refuses_what_would_fail_in_the_cluster(overrides, spec_kwargs, message):
    with pytest.raises(MlopsConfigurationError, match=message):
        render_manifests(_config(**overrides), KubernetesTrainingSpec(**{"image": "img", **spec_kwargs}))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("rainfall_train 2026-01-01T00:00", "rainfall-train-2026-01-01t00-00"), ("__", "training"),
     ("A" * 80, "a" * 52)],
)
def test_dns_name(text, expected):
    assert dns_name(text) == expected


def test_yaml_round_trips_and_kubectl_commands():
    manifests = render_manifests(_config(), KubernetesTrainingSpec(image="img", namespace="ml"))
    text = to_yaml(manifests)
    assert "&id" not in text and "*id" not in text  # no YAML anchors
    assert list(yaml.safe_load_all(text)) == manifests
    apply, wait, logs = kubectl_commands(manifests, timeout_s=600)
    assert apply[:2] == ["kubectl", "apply"] and "--timeout=600s" in wait
    assert wait[-1] == "job/rainfall-train-2026-01-01" and "--namespace" in logs


def test_render_imports_no_kubernetes_client_or_torch():
    import subprocess
    import sys

    code = ("import sys, airflow_mlops.training.k8s; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in {'kubernetes', 'torch', 'mlflow'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
