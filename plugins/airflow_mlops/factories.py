"""Model factories given as ``module:function``: resolution and building a module from a model spec."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain

if TYPE_CHECKING:
    from torch import nn

#: The built-in tabular MLP (``airflow_mlops.training.models``), the factory when none is given.
DEFAULT_MODEL_FACTORY = "airflow_mlops.training.models:tabular_mlp"


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
    from torch import nn

    model = factory(**dict(spec.get("kwargs") or {}))
    if not isinstance(model, nn.Module):
        raise MlopsConfigurationError(
            explain("The model factory returned no module", expected="a torch.nn.Module", received=type(model),
                    hint=f"check {spec['factory']}.")
        )
    return model
