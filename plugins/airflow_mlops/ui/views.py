"""Plain views of registry objects for the model page: versions, aliases per environment, lineage (no MLflow)."""

from __future__ import annotations

import json
from typing import Any

from airflow_mlops.lineage import TAG_PREFIX
from airflow_mlops.registry import tags as keys
from airflow_mlops.registry.tags import GATE_PREFIX
from airflow_mlops.tasks import DEFAULT_METRIC, as_task, metric_mode

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
    One model version: identity, state, aliases, evaluation (on which rows, against which champion), gate
    decision and lineage.

    ``model_aliases`` (alias -> version of the registered model) supplies the aliases when ``mv`` comes from a
    version search, which MLflow returns without them.
    """
    tags = dict(mv.tags or {})
    aliases = set(getattr(mv, "aliases", None) or [])
    aliases |= {a for a, v in (model_aliases or {}).items() if str(v) == str(mv.version)}
    lineage = lineage_from_tags(tags)
    parent = lineage.get("parent") or {}
    orchestration = lineage.get("orchestration") or {}
    task = tags.get(keys.TASK) or "binary"
    digest = tags.get(keys.EVAL_DIGEST, "")
    rows = tags.get(keys.EVAL_ROWS)
    return {
        "version": str(mv.version),
        "status": mv.status,
        "created": int(mv.creation_timestamp or 0),
        "run_id": mv.run_id,
        "source": mv.source,
        "aliases": sorted(aliases),
        "task": task,
        "metrics": {k: v for k, v in keys.metrics_from_tags(tags).items() if k not in ("rows", "classes")},
        "evaluation": {"digest": digest, "set": keys.short_digest(digest, 8) if digest else "",
                       "rows": int(float(rows)) if rows else None,
                       "champion_version": tags.get(keys.EVAL_CHAMPION)},
        "gate": prefixed(tags, GATE_PREFIX),
        "gate_metric": tags.get(keys.GATE_METRIC) or DEFAULT_METRIC[as_task(task)],
        "eval_on": {k: v for k, v in tags.items() if k.startswith(keys.EVAL_ON_PREFIX)},
        "parent_version": parent.get("version") if isinstance(parent, dict) else None,
        "dag_run": {"dag_id": orchestration.get("dag_id"), "run_id": orchestration.get("run_id")}
        if isinstance(orchestration, dict) and orchestration.get("dag_id") else None,
        "lineage": lineage,
    }


def comparison(view: dict[str, Any], by_version: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """
    The version's gate metric beside the champion's on the same rows (the champion's score was recorded on the
    champion's version under the set's digest), or None when it had no champion to beat.
    """
    metric = view["gate_metric"]
    own = view["metrics"].get(metric)
    champion = view["evaluation"]["champion_version"]
    digest = view["evaluation"]["digest"]
    out = {"metric": metric, "value": own, "champion_version": champion, "champion_value": None,
           "set": view["evaluation"]["set"], "rows": view["evaluation"]["rows"],
           "higher_is_better": metric_mode(metric).value == "max"}
    if champion and digest and champion in by_version:
        values = keys.eval_on_metrics(by_version[champion]["eval_on"], digest)
        out["champion_value"] = values.get(metric)
    return out


def version_states(versions: list[dict[str, Any]], history: list[dict[str, Any]]) -> dict[str, str]:
    """
    What happened to each version, newest event first: ``rolled back`` when a rollback moved an alias off it
    (its gate decision says ``promote``, but it serves nothing now), ``serving`` while it holds an alias,
    ``rejected`` by the gate, ``retired`` when a later promotion replaced it, ``registered`` otherwise.
    """
    states: dict[str, str] = {}
    for move in history:  # oldest first: later moves overwrite
        if move.get("action") == "rollback" and move.get("from_version"):
            states[str(move["from_version"])] = "rolled back"
        if move.get("action") in ("promote", "rollback") and move.get("to_version"):
            states[str(move["to_version"])] = "serving"
    out = {}
    for v in versions:
        decision = v["gate"].get("decision")
        state = states.get(v["version"])
        if v["aliases"]:
            out[v["version"]] = "serving"
        elif state == "rolled back":
            out[v["version"]] = "rolled back"
        elif decision == "reject":
            out[v["version"]] = "rejected"
        elif state == "serving":
            out[v["version"]] = "retired"
        else:
            out[v["version"]] = "registered"
    return out


def model_summary(model: Any, versions: list[Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A registered model with its environments and versions (newest first), each with its comparison and state."""
    aliases = {a: str(v) for a, v in (getattr(model, "aliases", None) or {}).items()}
    views = [version_view(mv, aliases) for mv in sorted(versions, key=lambda v: int(v.version), reverse=True)]
    by_version = {v["version"]: v for v in views}
    states = version_states(views, history or [])
    for v in views:
        v["comparison"] = comparison(v, by_version)
        v["state"] = states[v["version"]]
    return {
        "name": model.name,
        "description": model.description or "",
        "updated": int(model.last_updated_timestamp or 0),
        "environments": aliases_by_environment(aliases),
        "versions": views,
    }


def window_view(run: Any) -> dict[str, Any]:
    """One monitoring run (one checked window) as the timeline shows it."""
    params = dict(run.data.params or {})
    metrics = dict(run.data.metrics or {})
    tags = dict(run.data.tags or {})
    start, end = params.get(keys.WINDOW_START), params.get(keys.WINDOW_END)
    monitored = sorted(k for k in metrics if k.startswith("monitor.") and k.endswith(".value"))
    metric = monitored[0][len("monitor."):-len(".value")] if monitored else None
    return {
        "run_id": run.info.run_id,
        "start": start,
        "end": end,
        "window": f"{start}..{end}" if start or end else run.info.run_id[:8],
        "drift_share": metrics.get(keys.DRIFT_SHARE),
        "metric": metric,
        "value": metrics.get(monitored[0]) if monitored else None,
        "action": tags.get(keys.POLICY_ACTION),
        "signals": tags.get(keys.POLICY_SIGNALS, ""),
        "reason": tags.get(keys.POLICY_REASON, ""),
        "dag_run": {"dag_id": tags.get("airflow.dag_id"), "run_id": tags.get("airflow.run_id")}
        if tags.get("airflow.dag_id") else None,
    }
