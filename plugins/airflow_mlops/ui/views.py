"""Plain views of registry objects for the model page: versions, aliases per environment, lineage (no MLflow)."""

from __future__ import annotations

import json
from typing import Any

from airflow_mlops.lineage import TAG_PREFIX
from airflow_mlops.registry.tags import EVAL_PREFIX, GATE_PREFIX

#: Aliases shown as deployment environments, in promotion order; other aliases are listed after them.
ENVIRONMENTS: tuple[str, ...] = ("staging", "production", "champion")


def _parse(text: str) -> Any:
    """Lineage tags hold strings; structured values were written as compact JSON."""
    if text[:1] in "[{":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def lineage_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """``lineage.data.uri=...`` tags back into ``{"data": {"uri": ...}}`` groups (sorted, JSON values parsed)."""
    out: dict[str, Any] = {}
    for key in sorted(tags):
        if not key.startswith(TAG_PREFIX):
            continue
        group, _, field = key[len(TAG_PREFIX):].partition(".")
        value = _parse(tags[key])
        if field:
            out.setdefault(group, {})[field] = value
        else:
            out[group] = value
    return out


def prefixed(tags: dict[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix):]: v for k, v in sorted(tags.items()) if k.startswith(prefix)}


def aliases_by_environment(aliases: dict[str, str]) -> dict[str, str | None]:
    """Every environment (``None`` where its alias is unset), then any other alias, each to its version."""
    out: dict[str, str | None] = {env: (str(aliases[env]) if env in aliases else None) for env in ENVIRONMENTS}
    for alias in sorted(set(aliases) - set(ENVIRONMENTS)):
        out[alias] = str(aliases[alias])
    return out


def version_view(mv: Any, model_aliases: dict[str, str] | None = None) -> dict[str, Any]:
    """
    One model version: identity, state, aliases, evaluation, gate decision and lineage.

    ``model_aliases`` (alias -> version of the registered model) supplies the aliases when ``mv`` comes from a
    version search, which MLflow returns without them.
    """
    tags = dict(mv.tags or {})
    aliases = set(getattr(mv, "aliases", None) or [])
    aliases |= {a for a, v in (model_aliases or {}).items() if str(v) == str(mv.version)}
    lineage = lineage_from_tags(tags)
    parent = lineage.get("parent") or {}
    return {
        "version": str(mv.version),
        "status": mv.status,
        "created": int(mv.creation_timestamp or 0),
        "run_id": mv.run_id,
        "source": mv.source,
        "aliases": sorted(aliases),
        "metrics": prefixed(tags, EVAL_PREFIX),
        "gate": prefixed(tags, GATE_PREFIX),
        "parent_version": parent.get("version") if isinstance(parent, dict) else None,
        "lineage": lineage,
    }


def model_summary(model: Any, versions: list[Any]) -> dict[str, Any]:
    """A registered model with its environments and versions (newest first)."""
    aliases = {a: str(v) for a, v in (getattr(model, "aliases", None) or {}).items()}
    return {
        "name": model.name,
        "description": model.description or "",
        "updated": int(model.last_updated_timestamp or 0),
        "environments": aliases_by_environment(aliases),
        "versions": [version_view(mv, aliases) for mv in sorted(versions, key=lambda v: int(v.version), reverse=True)],
    }
