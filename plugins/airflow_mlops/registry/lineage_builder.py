"""Assemble a model version's lineage record from the pipeline's task results and the environment."""

from __future__ import annotations

from typing import Any

from airflow_mlops.lineage import (
    LineageRecord,
    framework_info,
    git_info,
    installed_packages,
    package_version,
    packages_digest,
    training_image_info,
)


def build_lineage(
    *,
    model: Any,
    validation: dict[str, Any],
    training: dict[str, Any],
    hyperparameters: dict[str, Any],
    checkpoint_uri: str,
    dag_id: str,
    run_id: str,
    task_id: str,
    try_number: int,
    data_uri: str | None = None,
    parent_version: str | None = None,
    evaluation: dict[str, Any] | None = None,
    checkpoint_manifest: dict[str, Any] | None = None,
    packages_artifact: str = "lineage/packages.txt",
    code_path: str | None = None,
    bundle: dict[str, Any] | None = None,
) -> tuple[LineageRecord, list[str]]:
    """
    The record of one model version. ``code_path`` is the file that defined the model (the DAG file): its
    repository's commit is the code's; ``bundle`` is the DAG bundle's name and version when Airflow knows them.
    """
    packages = installed_packages()
    pkg_digest = packages_digest(packages)
    cls = type(model)
    git = git_info(code_path)
    validation_result = None
    if validation:
        validation_result = {
            "success": validation.get("success"),
            "evaluated": validation.get("evaluated"),
            "failed": validation.get("failed"),
            "warned": validation.get("warned"),
            "suite": validation.get("suite"),
            "suite_digest": validation.get("suite_digest"),
        }
    record = LineageRecord(
        data={
            "uri": data_uri or validation.get("data_uri"),
            "digest": validation.get("digest"),
            "rows": validation.get("rows"),
            "schema": validation.get("schema"),
            "validation": validation_result,
        },
        code={
            "git_commit": git.get("git_commit"),
            "git_dirty": git.get("git_dirty"),
            "repository": git.get("repository"),
            "source_file": code_path,
            "package_version": package_version(),
            **({"bundle": bundle} if bundle else {}),
        },
        hyperparameters=dict(hyperparameters),
        framework=framework_info(f"{cls.__module__}.{cls.__qualname__}"),
        training_image=training_image_info(pkg_digest),
        packages={"artifact": packages_artifact, "digest": pkg_digest, "count": len(packages)},
        orchestration={"dag_id": dag_id, "run_id": run_id, "task_id": task_id, "try_number": try_number,
                       "training_mlflow_run": training.get("mlflow_run_id")},
        checkpoint={"uri": checkpoint_uri, "world_size": training.get("world_size"),
                    "strategy": training.get("strategy")},
        parent={"version": str(parent_version)} if parent_version else {},
    )
    manifest = checkpoint_manifest or {}
    spec = manifest.get("model_spec") or {}
    if spec:
        record.framework["model_factory"] = spec.get("factory") or spec.get("model_factory")
        record.framework["model_kwargs"] = spec.get("kwargs") or spec.get("model_kwargs")
    for key in ("step", "epoch", "metrics"):
        if key in manifest:
            record.checkpoint[key] = manifest[key]
    if evaluation and evaluation.get("eval_digest"):
        record.data["eval_digest"] = evaluation["eval_digest"]
    return record, packages
