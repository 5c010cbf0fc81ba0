"""Model factories given as ``module:function``: resolution and building a module from a model spec."""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain

if TYPE_CHECKING:
    from torch import nn

#: The built-in tabular MLP (``airflow_mlops.training.models``), the factory when none is given.
DEFAULT_MODEL_FACTORY = "airflow_mlops.training.models:tabular_mlp"
#: Factories every caller may build: the package's own models.
BUILTIN_FACTORIES: tuple[str, ...] = ("airflow_mlops.training.models:*",)
#: Comma-separated ``module:function`` or ``module:*`` the deployment allows beyond the configured factory.
ALLOWED_FACTORIES_ENV = "MLOPS_ALLOWED_FACTORIES"
#: Top-level modules that are never a model factory, even when configured: they run commands, touch files or
#: load code.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "importlib", "pickle",
    "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve", "pty", "socket", "ctypes",
    "code", "codeop", "runpy", "pdb", "webbrowser", "multiprocessing", "signal", "tempfile", "pathlib",
    "io", "_io", "glob", "asyncio", "platform", "urllib", "http", "ftplib", "smtplib", "telnetlib", "requests",
    "commands", "popen2", "spawn", "operator", "functools", "types", "inspect", "gc", "sysconfig", "site",
    "zipimport", "pkgutil", "torch", "numpy", "pandas", "yaml", "airflow", "mlflow", "boto3", "botocore",
})

_TRUSTED: ContextVar[tuple[str, ...]] = ContextVar("mlops_trusted_factories", default=())


def deployment_factories() -> list[str]:
    """The allow-list the deployment sets in env ``MLOPS_ALLOWED_FACTORIES``."""
    return [p.strip() for p in os.environ.get(ALLOWED_FACTORIES_ENV, "").split(",") if p.strip()]


@contextmanager
def allowing_factories(patterns: Iterable[str] | None) -> Iterator[tuple[str, ...]]:
    """Allow ``patterns`` (an operator's own configured factories) beside the built-in and deployment lists."""
    added = tuple(str(p) for p in (patterns or []) if str(p))
    token = _TRUSTED.set(_TRUSTED.get() + added)
    try:
        yield added
    finally:
        _TRUSTED.reset(token)


def _matches(path: str, pattern: str) -> bool:
    module, _, attr = path.partition(":")
    p_module, _, p_attr = pattern.strip().partition(":")
    return module == p_module and (p_attr == "*" or attr == p_attr)


def check_dangerous(path: str) -> None:
    """Refuse a factory whose top module is one that runs commands, touches files or loads code."""
    module = str(path).partition(":")[0]
    attr = str(path).partition(":")[2]
    top = module.split(".")[0]
    if top in DANGEROUS_MODULES or any(part.startswith("_") for part in attr.split(".") if part):
        raise MlopsConfigurationError(
            explain("Model factory names a module that is never a model factory", expected="a function of "
                    "your own model package returning nn.Module", received=path,
                    hint=f"modules such as {', '.join(sorted(DANGEROUS_MODULES)[:8])}, ... and private "
                    "attributes are refused; put the factory in your own module.")
        )


def allowed_patterns(allowed: Iterable[str] | None = None) -> list[str]:
    """Every pattern a factory may match: built-in, deployment, the caller's and the current scope's."""
    return [*BUILTIN_FACTORIES, *deployment_factories(), *(str(p) for p in (allowed or [])), *_TRUSTED.get()]


def check_factory_allowed(path: str, allowed: Iterable[str] | None = None) -> None:
    """Refuse a factory that is neither built in, configured by the caller nor on the deployment allow-list."""
    check_dangerous(path)
    patterns = allowed_patterns(allowed)
    if not any(_matches(path, p) for p in patterns):
        raise MlopsConfigurationError(
            explain("Model factory is not allowed (it may come from a checkpoint or registry artifact, which "
                    "never chooses code to run)", expected=f"one of {patterns}", received=path,
                    hint=f"configure it as the operator's model_factory / allowed_factories, or add it to env "
                    f"{ALLOWED_FACTORIES_ENV} (comma-separated 'module:function' or 'module:*').")
        )


def resolve_factory(path: str, allowed: Iterable[str] | None = None) -> Callable[..., nn.Module]:
    """
    Import ``package.module:function`` (the function may be a dotted attribute path), only when allowed.

    Allowed: the built-in models, the ``allowed`` patterns of the caller (its configured factory), those of an
    enclosing :func:`allowing_factories` and env ``MLOPS_ALLOWED_FACTORIES``; nothing is imported otherwise.
    """
    module_name, sep, attr = str(path).partition(":")
    if not sep or not module_name or not attr:
        raise MlopsConfigurationError(
            explain("Model factory is not an import path", expected="'package.module:function'", received=path)
        )
    check_factory_allowed(path, allowed)
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


def build_model(spec: dict[str, Any], allowed: Iterable[str] | None = None) -> nn.Module:
    """Build a model from a spec ``{"factory": "module:function", "kwargs": {...}}`` (see resolve_factory)."""
    factory = resolve_factory(spec["factory"], allowed)
    from torch import nn

    model = factory(**dict(spec.get("kwargs") or {}))
    if not isinstance(model, nn.Module):
        raise MlopsConfigurationError(
            explain("The model factory returned no module", expected="a torch.nn.Module", received=type(model),
                    hint=f"check {spec['factory']}.")
        )
    return model
