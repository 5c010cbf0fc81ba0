"""Scoring models on a frozen evaluation set, for any learning task: the challenger and the current champion."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import ModelOutputError, RegistryError, explain
from airflow_mlops.tasks import Task, as_task, compute_metrics, predict_scores

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: ``metrics(y_true, scores) -> {name: value}``: the task's metrics of one model's scores.
MetricsFn = Callable[[Any, Any], dict[str, float]]


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, log loss, Brier, accuracy, F1 of positive-class probabilities (AUC NaN with one class present)."""
    return compute_metrics(Task.BINARY, y_true, y_prob, threshold=threshold)


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Positive-class probabilities of a binary model (one logit per row)."""
    return predict_scores(model, x, Task.BINARY, batch_size)


def task_metrics(task: Task | str, user_metrics: Sequence[Any] = (), top_k: int = 3) -> MetricsFn:
    """The default metrics function of a task: its standard metrics plus the user's."""
    task = as_task(task)

    def metrics(y_true: Any, scores: Any) -> dict[str, float]:
        return compute_metrics(task, y_true, scores, top_k=top_k, user_metrics=user_metrics)

    return metrics


def features_matrix(df: pd.DataFrame, feature_columns: Sequence[str], what: str = "evaluation set") -> np.ndarray:
    import numpy as np

    missing = [c for c in feature_columns if c not in df.columns]
    if missing:
        raise ModelOutputError(explain(f"The {what} lacks model input columns", expected=list(feature_columns),
                                       received=missing))
    return np.ascontiguousarray(df[list(feature_columns)].to_numpy(dtype="float32"))


def evaluate_model(model: Any, df: pd.DataFrame, feature_columns: Sequence[str], target_column: str,
                   task: Task | str = Task.BINARY, metrics: MetricsFn | None = None) -> dict[str, float]:
    """``metrics`` (default: the task's) of the model's scores on ``df``."""
    if target_column not in df.columns:
        raise ModelOutputError(explain("The evaluation set lacks the target column", expected=target_column,
                                       received=sorted(df.columns)[:30]))
    scores = predict_scores(model, features_matrix(df, feature_columns), task)
    return (metrics or task_metrics(task))(df[target_column].to_numpy(), scores)


def load_champion(client: Any, name: str, alias: str) -> tuple[Any, Any] | tuple[None, None]:
    """The module behind ``name@alias`` (rebuilt from its weights) and its version, or (None, None)."""
    from mlflow.exceptions import MlflowException

    from airflow_mlops.registry.packaging import load_registered

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    model, _meta = load_registered(client, name, str(version.version))
    return model, version


@dataclass
class Evaluation:
    """The challenger and the champion scored on the same rows, with what identifies those rows."""

    task: str
    challenger: dict[str, float]
    champion: dict[str, float] | None
    champion_version: str | None
    eval_uri: str
    eval_digest: str
    eval_rows: int
    checkpoint_uri: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_against_champion(
    client: Any,
    challenger: Any,
    eval_df: pd.DataFrame,
    feature_columns: Sequence[str],
    target_column: str,
    model_name: str,
    champion_alias: str = "champion",
    task: Task | str = Task.BINARY,
    metrics: MetricsFn | None = None,
    *,
    eval_uri: str = "",
    eval_digest: str = "",
) -> Evaluation:
    """Score the challenger and the current champion on the same evaluation rows with the same metrics."""
    metrics = metrics or task_metrics(task)
    scored = evaluate_model(challenger, eval_df, feature_columns, target_column, task, metrics)
    champ, version = load_champion(client, model_name, champion_alias)
    champion = None
    if champ is not None:
        try:
            champion = evaluate_model(champ, eval_df, feature_columns, target_column, task, metrics)
        except ModelOutputError as exc:
            raise RegistryError(
                explain(f"The champion v{version.version} of {model_name} cannot be scored as a {as_task(task).value} "
                        "model", expected="a champion of the same task and inputs", received=str(exc)[:500],
                        hint="register under another model name, or move the champion alias.")
            ) from exc
    return Evaluation(task=as_task(task).value, challenger=scored, champion=champion,
                      champion_version=str(version.version) if version is not None else None,
                      eval_uri=eval_uri, eval_digest=eval_digest, eval_rows=len(eval_df))
