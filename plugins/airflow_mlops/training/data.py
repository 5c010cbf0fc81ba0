"""Tables to tensors for the worker: read CSV/Parquet from disk or S3, pick columns, cast by task."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.hooks.storage import Storage, get_storage
from airflow_mlops.training.config import DatasetSpec, Task

if TYPE_CHECKING:
    import pandas as pd
    import torch


def read_table(uri: str, storage: Storage | None = None) -> pd.DataFrame:
    import pandas as pd

    storage = storage or get_storage(uri)
    data = storage.read_bytes(uri)
    if uri.lower().endswith(".csv"):
        return pd.read_csv(io.BytesIO(data))
    return pd.read_parquet(io.BytesIO(data))


def to_tensors(df: pd.DataFrame, spec: DatasetSpec, task: Task, uri: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Features as float32 ``[N, F]``; targets float32 ``[N]`` (binary, regression) or int64 (multiclass)."""
    import numpy as np
    import torch

    missing = [c for c in [*spec.feature_columns, spec.target_column] if c not in df.columns]
    if missing:
        raise MlopsConfigurationError(
            explain(f"Columns missing from {uri}", expected=missing, received=sorted(map(str, df.columns)),
                    hint="check feature_columns and target_column against the table.")
        )
    if len(df) == 0:
        raise MlopsConfigurationError(explain(f"No rows in {uri}", expected="at least one row", received=0))
    feats = df[spec.feature_columns]
    try:
        x = feats.to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise MlopsConfigurationError(
            explain("Feature columns are not numeric", expected="numbers only",
                    received=dict(feats.dtypes.astype(str)), hint="encode categories before training.")
        ) from exc
    if np.isnan(x).any():
        bad = sorted(feats.columns[np.isnan(x).any(axis=0)])
        raise MlopsConfigurationError(
            explain(f"Missing values in features of {uri}", expected="no NaN", received=bad,
                    hint="impute or drop them upstream (the validation step can reject such batches).")
        )
    y_raw = df[spec.target_column]
    if y_raw.isna().any():
        raise MlopsConfigurationError(
            explain(f"Missing labels in {uri}", expected="no NaN in the target", received=int(y_raw.isna().sum()))
        )
    if task is Task.MULTICLASS:
        y = torch.from_numpy(y_raw.to_numpy(dtype=np.int64))
        if int(y.min()) < 0:
            raise MlopsConfigurationError(
                explain("Multiclass labels must be class indices", expected="integers 0..C-1",
                        received=int(y.min()))
            )
    else:
        y = torch.from_numpy(y_raw.to_numpy(dtype=np.float32))
        if task is Task.BINARY:
            values = set(np.unique(y.numpy()).tolist())
            if not values <= {0.0, 1.0}:
                raise MlopsConfigurationError(
                    explain("Binary labels must be 0 or 1", expected="{0, 1}", received=sorted(values)[:10])
                )
    # pandas hands back the columns of one block in Fortran order; row batches gather far faster from C order.
    return torch.from_numpy(np.ascontiguousarray(x)), y
