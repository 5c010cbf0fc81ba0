"""Model factories: the built-in tabular MLP and resolution of user factories given as ``module:function``."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from airflow_mlops.exceptions import MlopsConfigurationError, explain


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


def tabular_mlp(
    in_features: int,
    hidden_sizes: Sequence[int] = (64, 32),
    out_features: int = 1,
    dropout: float = 0.0,
    feature_mean: Sequence[float] | None = None,
    feature_std: Sequence[float] | None = None,
) -> nn.Module:
    """A feed-forward network for tabular rows: [standardize] -> (Linear, ReLU, Dropout)* -> Linear."""
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
    return nn.Sequential(*layers)


def resolve_factory(path: str) -> Callable[..., nn.Module]:
    """Import ``package.module:function`` (the function may be a dotted attribute path)."""
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise MlopsConfigurationError(
            explain("Model factory is not an import path", expected="'package.module:function'", received=path)
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise MlopsConfigurationError(
            explain("Cannot import the model factory module", expected=f"an importable module {module_name!r}",
                    received=str(exc), hint="add the folder that holds it to the operator's pythonpath.")
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MlopsConfigurationError(
                explain("Model factory not found in its module", expected=f"{attr!r} in {module_name}",
                        received=sorted(n for n in dir(obj) if not n.startswith("_"))[:20])
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise MlopsConfigurationError(
            explain("Model factory is not callable", expected="a function returning nn.Module", received=type(obj))
        )
    return obj


def factory_parameters(factory: Callable[..., Any]) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Build a model from a spec ``{"factory": "module:function", "kwargs": {...}}``."""
    factory = resolve_factory(spec["factory"])
    model = factory(**dict(spec.get("kwargs") or {}))
    if not isinstance(model, nn.Module):
        raise MlopsConfigurationError(
            explain("The model factory returned no module", expected="a torch.nn.Module", received=type(model),
                    hint=f"check {spec['factory']}.")
        )
    return model
