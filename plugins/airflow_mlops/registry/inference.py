"""Batch scoring with a registered model version resolved from an alias."""

from __future__ import annotations

from typing import Any

from airflow_mlops.exceptions import RegistryError, explain


def resolve_alias(client: Any, name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise RegistryError(
            explain(f"No version of {name!r} holds the alias {alias!r}", expected="a promoted model version",
                    received=alias, hint="run train_pipeline (or promote a version) first.")
        ) from exc


def score_batch(client: Any, name: str, alias: str, df: Any, feature_columns: list[str],
                passthrough: list[str] | None = None, threshold: float = 0.5) -> tuple[Any, Any]:
    """Score ``df`` with the version behind ``name@alias``; every row records the version that scored it.

    The alias is resolved once and the model loaded by version, so a promotion during scoring cannot mix
    two versions in one batch.
    """
    import mlflow.pytorch
    import pandas as pd

    from airflow_mlops.registry.evaluation import predict_proba

    version = resolve_alias(client, name, alias)
    model = mlflow.pytorch.load_model(f"models:/{name}/{version.version}", map_location="cpu")
    missing = [c for c in feature_columns if c not in df.columns]
    if missing:
        raise RegistryError(explain("Batch lacks model input columns", expected=feature_columns, received=missing))
    prob = predict_proba(model, df[feature_columns].to_numpy(dtype="float32"))
    out = pd.DataFrame({c: df[c].to_numpy() for c in (passthrough or []) if c in df.columns})
    out["probability"] = prob
    out["prediction"] = (prob >= threshold).astype("int64")
    out["model_name"] = name
    out["model_version"] = str(version.version)
    out["model_alias"] = alias
    return out, version
