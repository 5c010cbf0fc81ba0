"""Kubernetes manifests of a multi-node torchrun training run: ConfigMap, headless Service, Indexed Job."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.training.config import TrainingConfig
from airflow_mlops.training.launcher import build_torchrun_command

CONFIG_MOUNT = "/etc/airflow-mlops"
CONFIG_KEY = "training_config.json"
NODE_RANK_ENV = "NODE_RANK"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
RUN_LABEL = "airflow-mlops/training-run"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")


def dns_name(text: str, max_len: int = 52) -> str:
    """A DNS-1123 label from a run name (Job pods append ``-<index>-<suffix>``, so stay well under 63)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    name = re.sub(r"-{2,}", "-", name)[:max_len].rstrip("-")
    return name or "training"


@dataclass(kw_only=True)
class KubernetesTrainingSpec:
    """
    Where and how the training pods run.

    :param image: the project image (docker/Dockerfile) with the package and torch installed.
    :param namespace: Kubernetes namespace of every object.
    :param name: name of the Job, Service and ConfigMap; derived from the run name when empty.
    :param cpu: CPU request and limit per pod (one pod per node of the run).
    :param memory: memory request and limit per pod.
    :param gpus_per_node: ``nvidia.com/gpu`` per pod; 0 for CPU training (gloo).
    :param rdzv_port: port of torchrun's c10d rendezvous store, hosted by pod 0.
    :param env: extra environment of the workers (MLflow tracking URI, S3 endpoint, ...).
    :param secret_env: names of Secrets whose keys become environment variables (credentials never
        appear in a manifest).
    :param service_account: pod service account (e.g. one bound to an S3 role).
    :param shared_volume_claim: a ReadWriteMany PersistentVolumeClaim mounted at ``shared_mount_path``; without
        it, data, checkpoints and outputs must be s3:// URIs, since pods share no disk.
    :param active_deadline_s: Kubernetes stops the Job after this many seconds.
    :param ttl_after_finished_s: finished Jobs (and their pods) are deleted after this many seconds.
    """

    image: str
    namespace: str = "default"
    name: str = ""
    cpu: str = "2"
    memory: str = "4Gi"
    gpus_per_node: int = 0
    rdzv_port: int = 29400
    env: dict[str, str] = field(default_factory=dict)
    secret_env: list[str] = field(default_factory=list)
    service_account: str | None = None
    shared_volume_claim: str | None = None
    shared_mount_path: str = "/shared"
    image_pull_policy: str = "IfNotPresent"
    active_deadline_s: int | None = None
    ttl_after_finished_s: int | None = 3600
    node_selector: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.image, str) or not self.image.strip():
            raise MlopsConfigurationError(explain("image is empty", expected="an image reference",
                                                  received=self.image))
        for attr in ("namespace", *(("name",) if self.name else ())):
            value = getattr(self, attr)
            if not isinstance(value, str) or len(value) > 63 or not _DNS_LABEL.match(value):
                raise MlopsConfigurationError(
                    explain(f"{attr} is not a DNS-1123 label", expected="lowercase letters, digits and '-'",
                            received=value)
                )
        for attr in ("cpu", "memory"):
            if not _QUANTITY.match(str(getattr(self, attr))):
                raise MlopsConfigurationError(
                    explain(f"{attr} is not a Kubernetes quantity", expected="e.g. '2', '500m', '4Gi'",
                            received=getattr(self, attr))
                )
        if isinstance(self.gpus_per_node, bool) or not isinstance(self.gpus_per_node, int) or self.gpus_per_node < 0:
            raise MlopsConfigurationError(explain("gpus_per_node is out of range", expected="an integer >= 0",
                                                  received=self.gpus_per_node))
        if not (0 < int(self.rdzv_port) < 65536):
            raise MlopsConfigurationError(explain("rdzv_port is out of range", expected="1..65535",
                                                  received=self.rdzv_port))
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise MlopsConfigurationError(
                explain("Unknown image_pull_policy", expected="Always, IfNotPresent or Never",
                        received=self.image_pull_policy)
            )


def _shared_paths(config: TrainingConfig) -> dict[str, str | None]:
    return {
        "dataset.train_uri": config.dataset.train_uri,
        "dataset.eval_uri": config.dataset.eval_uri,
        "checkpoint_dir": config.checkpoint_dir,
        "output_dir": config.output_dir,
        "init_checkpoint_uri": config.init_checkpoint_uri,
    }


def check_reachable_from_pods(config: TrainingConfig, spec: KubernetesTrainingSpec) -> None:
    """Every pod must see the data and the checkpoints: s3:// URIs, or paths on the shared volume."""
    bad = {}
    for name, uri in _shared_paths(config).items():
        if uri is None or uri.startswith("s3://"):
            continue
        if spec.shared_volume_claim and uri.startswith(spec.shared_mount_path.rstrip("/") + "/"):
            continue
        bad[name] = uri
    if bad:
        raise MlopsConfigurationError(
            explain(
                "Training pods cannot reach these paths",
                expected="s3:// URIs" + (f" or paths under {spec.shared_mount_path}" if spec.shared_volume_claim
                                         else ""),
                received=bad,
                hint="write the window and checkpoints to S3, or mount a ReadWriteMany volume "
                "(shared_volume_claim) and use paths under it.",
            )
        )


def rendezvous_endpoint(name: str, namespace: str, port: int) -> str:
    """Pod 0 of the Indexed Job, by its stable DNS name under the headless Service."""
    return f"{name}-0.{name}.{namespace}.svc.cluster.local:{port}"


def pod_config(config: TrainingConfig, spec: KubernetesTrainingSpec, name: str) -> TrainingConfig:
    """The run's config as every pod sees it: its node count and pod 0's rendezvous endpoint."""
    data = config.to_dict()
    data["rdzv_endpoint"] = rendezvous_endpoint(name, spec.namespace, spec.rdzv_port)
    data["node_rank"] = 0  # each pod passes its own rank to torchrun; c10d assigns the global ranks
    return TrainingConfig.from_dict(data)


def container_command(config: TrainingConfig) -> list[str]:
    """torchrun as the launcher builds it, with this pod's rank read from the Job's completion index."""
    cmd = build_torchrun_command(config, f"{CONFIG_MOUNT}/{CONFIG_KEY}")
    cmd[0] = "python"  # the interpreter of the image, not of the process that renders
    cmd[cmd.index("--node-rank") + 1] = f"$({NODE_RANK_ENV})"
    return cmd


def render_manifests(config: TrainingConfig, spec: KubernetesTrainingSpec) -> list[dict[str, Any]]:
    """
    ConfigMap (the training config), headless Service (stable DNS for rendezvous) and an Indexed Job with one
    pod per node. Plain dicts: apply them with ``kubectl apply -f`` (``to_yaml``) or any Kubernetes client.
    """
    check_reachable_from_pods(config, spec)
    name = spec.name or dns_name(config.run_name)
    cfg = pod_config(config, spec, name)
    labels = {
        "app.kubernetes.io/name": "airflow-mlops-training",
        "app.kubernetes.io/part-of": "airflow-mlops",
        RUN_LABEL: name,
    }
    meta = {"name": name, "namespace": spec.namespace, "labels": labels}

    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**meta, "name": f"{name}-config"},
        "data": {CONFIG_KEY: json.dumps(cfg.to_dict(), indent=2, sort_keys=True)},
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "clusterIP": "None",
            # Pods must find pod 0 before any of them is Ready: rendezvous happens at start.
            "publishNotReadyAddresses": True,
            "selector": {RUN_LABEL: name},
            "ports": [{"name": "c10d", "port": spec.rdzv_port, "targetPort": spec.rdzv_port, "protocol": "TCP"}],
        },
    }

    env: list[dict[str, Any]] = [
        {"name": NODE_RANK_ENV, "valueFrom": {"fieldRef": {
            "fieldPath": f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"}}},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "OMP_NUM_THREADS", "value": "1"},
        {"name": "MLOPS_TRAINING_IMAGE", "value": spec.image},
    ]
    env += [{"name": k, "value": str(v)} for k, v in sorted(spec.env.items())]
    limits: dict[str, Any] = {"cpu": spec.cpu, "memory": spec.memory}
    if spec.gpus_per_node:
        limits["nvidia.com/gpu"] = spec.gpus_per_node
    mounts = [{"name": "training-config", "mountPath": CONFIG_MOUNT, "readOnly": True},
              {"name": "dshm", "mountPath": "/dev/shm"}]
    volumes: list[dict[str, Any]] = [
        {"name": "training-config", "configMap": {"name": f"{name}-config"}},
        # NCCL and DataLoader workers exchange tensors through shared memory; the container default is 64 MB.
        {"name": "dshm", "emptyDir": {"medium": "Memory"}},
    ]
    if spec.shared_volume_claim:
        mounts.append({"name": "shared", "mountPath": spec.shared_mount_path})
        volumes.append({"name": "shared", "persistentVolumeClaim": {"claimName": spec.shared_volume_claim}})
    container: dict[str, Any] = {
        "name": "trainer",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": container_command(cfg),
        "env": env,
        "ports": [{"name": "c10d", "containerPort": spec.rdzv_port}],
        "resources": {"requests": {"cpu": spec.cpu, "memory": spec.memory}, "limits": limits},
        "volumeMounts": mounts,
    }
    if spec.secret_env:
        container["envFrom"] = [{"secretRef": {"name": s}} for s in spec.secret_env]
    pod_spec: dict[str, Any] = {
        # hostname <job>-<index> under this subdomain: <job>-0.<service> resolves to pod 0.
        "subdomain": name,
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
    }
    if spec.service_account:
        pod_spec["serviceAccountName"] = spec.service_account
    if spec.node_selector:
        pod_spec["nodeSelector"] = dict(spec.node_selector)
    job_spec: dict[str, Any] = {
        "completionMode": "Indexed",
        "completions": cfg.nnodes,
        "parallelism": cfg.nnodes,
        # No Kubernetes-level retries: a failed node fails the run, and Airflow's task retry resumes it
        # from the last committed checkpoint.
        "backoffLimit": 0,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if spec.active_deadline_s:
        job_spec["activeDeadlineSeconds"] = int(spec.active_deadline_s)
    if spec.ttl_after_finished_s is not None:
        job_spec["ttlSecondsAfterFinished"] = int(spec.ttl_after_finished_s)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta, "spec": job_spec}
    # Independent copies: no object shares a nested dict with another (and YAML needs no anchors).
    return json.loads(json.dumps([config_map, service, job]))


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """Multi-document YAML for ``kubectl apply -f``; multi-line strings (the config JSON) as literal blocks."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        pass

    def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    _Dumper.add_representer(str, _str)
    return yaml.dump_all(manifests, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def kubectl_commands(manifests: list[dict[str, Any]], timeout_s: int = 3600) -> list[list[str]]:
    """What a launcher runs: apply the manifests (on stdin), wait for the Job, then print its logs."""
    job = next(m for m in manifests if m["kind"] == "Job")
    ns, name = job["metadata"]["namespace"], job["metadata"]["name"]
    return [
        ["kubectl", "apply", "--namespace", ns, "-f", "-"],
        ["kubectl", "wait", "--namespace", ns, "--for=condition=complete", f"--timeout={timeout_s}s", f"job/{name}"],
        ["kubectl", "logs", "--namespace", ns, "--prefix", "--all-containers", "-l", f"{RUN_LABEL}={name}"],
    ]


def main(argv: list[str] | None = None) -> int:
    """``python -m airflow_mlops.training.k8s --config cfg.json --image IMAGE [--nnodes N]`` prints the manifests."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--config", required=True, help="TrainingConfig JSON")
    parser.add_argument("--image", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--nnodes", type=int, help="override the config's node count")
    parser.add_argument("--gpus-per-node", type=int, default=0)
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as fh:
        data = json.load(fh)
    if args.nnodes:
        data["nnodes"] = args.nnodes
        data.setdefault("rdzv_endpoint", "pending:29400")  # replaced by pod 0's address when rendering
    spec = KubernetesTrainingSpec(image=args.image, namespace=args.namespace, gpus_per_node=args.gpus_per_node)
    print(to_yaml(render_manifests(TrainingConfig.from_dict(data), spec)), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
