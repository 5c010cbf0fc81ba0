"""Names of the tags the package writes on MLflow runs, registered models and versions, beside their parsers.

One place for every key: the registry service writes them, the operators, UI and scripts read them through
these constants and functions, never through string literals of their own.
"""

from __future__ import annotations

import json
import math
from typing import Any

from airflow_mlops.lineage import TAG_PREFIX as LINEAGE_PREFIX

# --- model versions ----------------------------------------------------------------------------------------------
SOURCE_KEY = "mlops.source_key"  # DAG run + checkpoint a version was registered from: retries find it
TASK = "mlops.task"  # the learning task the version was declared with
DECISION = "mlops.gate.decision"  # promote | reject
REASON = "mlops.gate.reason"
GATE_METRIC = "mlops.gate.metric"  # the metric the gate compared with the champion
GATE_PREFIX = "mlops.gate."
EVAL_PREFIX = "eval."  # eval.<metric>: the version's own score on the evaluation set of its run
EVAL_DIGEST = "eval.dataset_digest"
EVAL_ROWS = "eval.rows"
EVAL_CHAMPION = "eval.champion_version"  # the champion the version was evaluated against (same rows)
EVAL_ON_PREFIX = "eval_on."  # eval_on.<digest12>.<metric>: a champion's score on a later challenger's set
CHECKPOINT_URI = f"{LINEAGE_PREFIX}checkpoint.uri"
PARENT_VERSION = f"{LINEAGE_PREFIX}parent.version"

# --- registered models -------------------------------------------------------------------------------------------
ALIAS_MOVE_PREFIX = "mlops.alias_move."  # one tag per alias move, JSON of AliasMove
# The registry lock: registered models named LOCK_PREFIX + <model> + "--g<generation>" (registry/lock.py).
LOCK_PREFIX = "mlops-lock--"
LOCK_OWNER_TAG = "mlops.lock.owner"
LOCK_TOKEN_TAG = "mlops.lock.token"
LOCK_TTL_TAG = "mlops.lock.ttl_s"
LOCK_RELEASED_TAG = "mlops.lock.released"

# --- runs --------------------------------------------------------------------------------------------------------
RUN_EVAL_DIGEST = "mlops.eval_digest"
POLICY_ACTION = "mlops.policy.action"  # on a monitoring run: what the trigger policy decided for the window
POLICY_SIGNALS = "mlops.policy.signals"
POLICY_REASON = "mlops.policy.reason"
EARLY_STOP_REASON = "mlops.early_stopping.reason"  # on a training run: no_improvement | max_epochs | max_steps
EARLY_STOP_MONITOR = "mlops.early_stopping.monitor"  # the metric it watched, e.g. stop_val_loss
EARLY_STOP_BEST_EPOCH = "early_stopping.best_epoch"  # metrics of a training run
EARLY_STOP_STOPPED_EPOCH = "early_stopping.stopped_epoch"  # only when it stopped early
EARLY_STOP_EPOCHS_RUN = "early_stopping.epochs_run"
EARLY_STOP_BEST = "early_stopping.best"
WINDOW_START = "window_start"  # params of a monitoring run
WINDOW_END = "window_end"


def monitoring_experiment(model_name: str) -> str:
    """The MLflow experiment of a model's monitoring runs (one run per checked window)."""
    return f"{model_name}-monitoring"


def monitor_metric(metric: str, key: str = "value") -> str:
    """Run metric of the champion's performance on a monitored window: ``monitor.auc.value``, ``.drop``."""
    return f"monitor.{metric}.{key}"


DRIFT_SHARE = "drift.share"
DRIFT_PREDICTION_SCORE = "drift.prediction_score"


#: ``eval.*`` tags that are not metrics.
NOT_METRICS = frozenset({EVAL_DIGEST, EVAL_CHAMPION})


def eval_metric_tag(metric: str) -> str:
    return f"{EVAL_PREFIX}{metric}"


def run_eval_metric(who: str, metric: str) -> str:
    """Run metric of one model's score in an evaluation: ``eval.challenger.auc``, ``eval.champion.auc``."""
    return f"{EVAL_PREFIX}{who}.{metric}"


def eval_on_tag(digest: str, metric: str) -> str:
    """Tag of a champion's score on the evaluation set with ``digest`` (``sha256:...``)."""
    return f"{EVAL_ON_PREFIX}{short_digest(digest)}.{metric}"


def short_digest(digest: str, length: int = 12) -> str:
    return digest.split(":")[-1][:length]


def format_number(value: Any) -> str:
    """A metric as a tag value: ``repr`` of the float, so it reads back exactly."""
    return repr(float(value))


def metrics_from_tags(tags: dict[str, str], prefix: str = EVAL_PREFIX) -> dict[str, float]:
    """``eval.<metric>`` tags as ``{metric: value}``; non-numeric values (the digest) are left out."""
    out: dict[str, float] = {}
    for key, value in (tags or {}).items():
        if key.startswith(prefix) and "." not in key[len(prefix):] and key not in NOT_METRICS:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            if not math.isnan(number) or value.lower() == "nan":
                out[key[len(prefix):]] = number
    return out


def eval_on_metrics(tags: dict[str, str], digest: str) -> dict[str, float]:
    """A version's scores on the evaluation set ``digest`` (``eval_on.<digest12>.<metric>`` tags)."""
    return metrics_from_tags(tags, f"{EVAL_ON_PREFIX}{short_digest(digest)}.")


ALIAS_MOVE_ACTIONS = ("promote", "rollback", "reject")


def _version_str(value: Any) -> bool:
    return isinstance(value, str) and value.isdigit() and len(value) <= 12


def parse_alias_move(value: Any) -> dict[str, Any] | None:
    """One ``mlops.alias_move.*`` tag value as a move, or None when its JSON or any field is malformed."""
    try:
        entry = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    ok = (isinstance(entry.get("alias"), str) and bool(entry["alias"]) and _version_str(entry.get("to_version"))
          and (entry.get("from_version") is None or _version_str(entry.get("from_version")))
          and isinstance(entry.get("time"), int | float) and not isinstance(entry.get("time"), bool)
          and math.isfinite(entry["time"]) and isinstance(entry.get("dag_run"), str)
          and isinstance(entry.get("reason"), str) and entry.get("action", "promote") in ALIAS_MOVE_ACTIONS)
    if not ok:
        return None
    return {"alias": entry["alias"], "from_version": entry.get("from_version"), "to_version": entry["to_version"],
            "time": float(entry["time"]), "dag_run": entry["dag_run"], "reason": entry["reason"],
            "action": entry.get("action", "promote")}


def consistent_moves(moves: list[dict[str, Any]], current: str | None) -> tuple[list[dict[str, Any]], list[dict]]:
    """
    Split one alias's moves (oldest first) into those that form one chain ending at its ``current`` version
    and those that do not (forged or stale): each move must start where the previous one ended, and moves after
    the last one that reached the alias's actual version are not trusted. Rejections move nothing and stay.
    """
    kept: list[dict[str, Any]] = []
    dropped: list[dict[str, Any]] = []
    state: str | None = None
    started = False
    for move in moves:
        if move["action"] == "reject":
            kept.append(move)
        elif not started or move["from_version"] == state:
            kept.append(move)
            state, started = move["to_version"], True
        else:
            dropped.append(move)
    if started and current is not None and state != current:
        last = max((i for i, m in enumerate(kept) if m["action"] != "reject" and m["to_version"] == current),
                   default=-1)
        tail = [m for m in kept[last + 1:] if m["action"] != "reject"]
        kept = kept[:last + 1] + [m for m in kept[last + 1:] if m["action"] == "reject"]
        dropped.extend(tail)
    return kept, dropped
