"""The built-in model factory: a tabular MLP with feature scaling inside the model."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.factories import build_model, factory_parameters, resolve_factory

__all__ = ["Rescale", "Standardize", "build_model", "factory_parameters", "resolve_factory", "tabular_mlp"]


class Standardize(nn.Module):
    """Feature scaling kept inside the model, so whoever loads it feeds raw columns."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        std_t = torch.tensor(list(std), dtype=torch.float32)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32))
        # Constant columns would divide by zero; leave them unscaled.
        self.register_buffer("std", torch.where(std_t > 0, std_t, torch.ones_like(std_t)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Rescale(nn.Module):
    """Outputs learnt as z-scores back in the target's units: ``mean + std * x``."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(float(mean), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(float(std) if std > 0 else 1.0, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def tabular_mlp(
    in_features: int,
    hidden_sizes: Sequence[int] = (64, 32),
    out_features: int = 1,
    dropout: float = 0.0,
    feature_mean: Sequence[float] | None = None,
    feature_std: Sequence[float] | None = None,
    target_mean: float | None = None,
    target_std: float | None = None,
) -> nn.Module:
    """
    A feed-forward network for tabular rows: [standardize] -> (Linear, ReLU, Dropout)* -> Linear [-> rescale].

    ``target_mean``/``target_std`` (regression; filled from the training rows) make the network learn z-scores
    and answer in the target's units.
    """
    if in_features < 1 or out_features < 1:
        raise MlopsConfigurationError(
            explain("tabular_mlp needs positive sizes", expected="in_features >= 1 and out_features >= 1",
                    received={"in_features": in_features, "out_features": out_features})
        )
    layers: list[nn.Module] = []
    if feature_mean is not None and feature_std is not None:
        layers.append(Standardize(feature_mean, feature_std))
    width = in_features
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, int(hidden)), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(hidden)
    layers.append(nn.Linear(width, out_features))
    if target_mean is not None and target_std is not None:
        layers.append(Rescale(target_mean, target_std))
    return nn.Sequential(*layers)
