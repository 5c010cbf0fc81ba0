"""Batch scoring with a registered model version resolved from an alias, for any learning task."""

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
                    received=alias, hint="run the training pipeline (or promote a version) first.")
        ) from exc


def score_batch(client: Any, name: str, alias: str, df: Any, feature_columns: list[str] | None = None,
                passthrough: list[str] | None = None) -> tuple[Any, Any]:
    """
    Score ``df`` with the version behind ``name@alias``; every row records the version that scored it.

    The alias is resolved once and the model loaded by version, so a promotion during scoring cannot mix two
    versions in one batch. The columns are what the version's task returns (see
    :func:`airflow_mlops.tasks.prediction_frame`); a model whose output does not fit its task raises
    :class:`~airflow_mlops.exceptions.ModelOutputError` before anything is written.
    """
    import pandas as pd

    from airflow_mlops.exceptions import ModelOutputError
    from airflow_mlops.registry.packaging import load_registered, predict_frame

    version = resolve_alias(client, name, alias)
    model, meta = load_registered(client, name, str(version.version))
    if feature_columns is not None and list(feature_columns) != list(meta.features):
        raise ModelOutputError(
            explain(f"{name} v{version.version} was trained on other inputs", expected=list(meta.features),
                    received=list(feature_columns), hint="pass the model's own feature columns, in its order.")
        )
    predictions = predict_frame(model, meta, df)
    out = pd.DataFrame({c: df[c].to_numpy() for c in (passthrough or []) if c in df.columns})
    for column in predictions.columns:
        out[column] = predictions[column].to_numpy()
    out["model_name"] = name
    out["model_version"] = str(version.version)
    out["model_alias"] = alias
    return out, version, meta
