"""Scoring a model on a frozen evaluation set: pure metric functions and the model-loading glue."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def binary_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """ROC-AUC, accuracy, log loss and Brier score; AUC is NaN when only one class is present."""
    import numpy as np
    from sklearn.metrics import log_loss, roc_auc_score

    y_true = np.asarray(y_true).astype(int).ravel()
    y_prob = np.clip(np.asarray(y_prob, dtype="float64").ravel(), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y_true, y_prob)) if len(np.unique(y_true)) == 2 else math.nan
    return {
        "auc": auc,
        "accuracy": float(((y_prob >= threshold).astype(int) == y_true).mean()),
        "log_loss": float(log_loss(y_true, y_prob, labels=[0, 1])),
        "brier": float(np.mean((y_prob - y_true) ** 2)),
        "positive_rate": float(y_true.mean()),
        "rows": float(len(y_true)),
    }


def predict_proba(model: Any, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Positive-class probabilities from a torch module that outputs one logit per row."""
    import numpy as np
    import torch

    try:
        model.eval()
    except NotImplementedError:
        pass  # a torch.export program loaded from the registry (pt2) is already frozen in inference mode
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(torch.as_tensor(x[i : i + batch_size], dtype=torch.float32))
            out.append(torch.sigmoid(logits.reshape(-1)).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def evaluate_model(model: Any, df: Any, feature_columns: list[str], target_column: str) -> dict[str, float]:
    import numpy as np

    x = np.ascontiguousarray(df[feature_columns].to_numpy(dtype="float32"))
    y = df[target_column].to_numpy()
    return binary_metrics(y, predict_proba(model, x))


def champion_model(client: Any, name: str, alias: str) -> tuple[Any, Any] | tuple[None, None]:
    """The model behind ``models:/<name>@<alias>`` and its version, or (None, None) without a champion."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None, None
    import mlflow.pytorch

    return mlflow.pytorch.load_model(f"models:/{name}@{alias}", map_location="cpu"), version


def evaluate_against_champion(
    client: Any,
    challenger: Any,
    eval_df: Any,
    feature_columns: list[str],
    target_column: str,
    model_name: str,
    champion_alias: str = "champion",
) -> dict[str, Any]:
    """Score the challenger and the current champion on the same evaluation rows."""
    result: dict[str, Any] = {
        "challenger": evaluate_model(challenger, eval_df, feature_columns, target_column),
        "champion": None,
        "champion_version": None,
    }
    champ, version = champion_model(client, model_name, champion_alias)
    if champ is not None:
        result["champion"] = evaluate_model(champ, eval_df, feature_columns, target_column)
        result["champion_version"] = str(version.version)
    return result
