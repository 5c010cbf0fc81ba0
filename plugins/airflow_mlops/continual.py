"""Continual learning's steps of its own: a drift event into a training request, replay rows, a budgeted fine-tune plan."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.spec import ModelSpec


def span_start(start: Any, span: float, time_type: str) -> Any:
    """``span`` before ``start``: days for a date column, units for a numeric one."""
    if time_type == "numeric" or (time_type == "auto" and _is_number(start)):
        value = float(start) - float(span)
        return int(value) if value.is_integer() else value
    return (dt.date.fromisoformat(str(start)[:10]) - dt.timedelta(days=float(span))).isoformat()


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def resolve_request(spec: ModelSpec, default_source: str, params: dict[str, Any],
                    extra: dict[str, Any]) -> dict[str, Any]:
    """
    The training request from the drift event's ``extra`` (or the Params, which win), with the champion to start
    from: a fine-tune without a champion checkpoint becomes a retrain, since there is nothing to start from.
    """
    from airflow_mlops.hooks.mlflow import MlflowHook
    from airflow_mlops.registry.service import RegistryService
    from airflow_mlops.registry.tags import CHECKPOINT_URI

    wanted = params.get("action")
    action = extra.get("action") if wanted in (None, "", "event") else wanted
    if action not in ("fine_tune", "retrain"):
        raise MlopsConfigurationError(explain("No training action", expected="'fine_tune' or 'retrain' from the "
                                              "drift event or the Params", received=action))
    start = params.get("window_start") if params.get("window_start") not in (None, "") else extra.get("window_start")
    end = params.get("window_end") if params.get("window_end") not in (None, "") else extra.get("window_end")
    if start in (None, "") or end in (None, ""):
        raise MlopsConfigurationError(explain("No window to learn from", expected="window_start and window_end from "
                                              "the drift event or the Params", received={"start": start, "end": end}))
    champion = RegistryService(MlflowHook().client).version_for_alias(spec.name, "champion")
    init = None
    if action == "fine_tune":
        init = (champion.tags or {}).get(CHECKPOINT_URI) if champion is not None else None
        if not init:
            action = "retrain"
    return {
        "action": action,
        "source_uri": params.get("source_uri") or extra.get("source_uri") or default_source,
        "train_start": span_start(start, float(params.get("recent_span") or 0), spec.time_type),
        "train_end": end,
        "parent_version": str(champion.version) if champion is not None and action == "fine_tune" else None,
        "init_checkpoint_uri": init,
        "reason": extra.get("reason") or "requested by hand",
    }


def add_replay(spec: ModelSpec, window: dict[str, Any], source_uri: str, rows: int, data_root: str | None = None,
               storage_for: Any = None) -> str:
    """
    The window's training rows plus a seeded sample of ``rows`` older rows of the source (rehearsal against
    forgetting), in time order, written beside the window; the window's own file when there is nothing to add.
    """
    import pandas as pd

    from airflow_mlops.datasets import read_table, typed_bounds, write_table
    from airflow_mlops.hooks.storage import get_storage

    storage_for = storage_for or get_storage
    if rows <= 0:
        return window["train_uri"]
    source = read_table(source_uri, storage_for(source_uri))
    column = spec.time_column
    values, start, _end = typed_bounds(source[column], window["start"], window["end"], spec.time_type)
    older = source[values < start]
    if older.empty:
        return window["train_uri"]
    train = read_table(window["train_uri"], storage_for(window["train_uri"]))
    sample = older.sample(n=min(rows, len(older)), random_state=0)
    out = window["train_uri"].replace("train_", "train_replay_")
    order = spec.key_column or column
    # Rows stay in time order: suites may check that keys increase.
    write_table(pd.concat([sample, train]).sort_values(order, kind="stable").reset_index(drop=True), out,
                storage_for(out))
    return out


@dataclass(frozen=True)
class FineTunePlan:
    """
    How one budgeted fine-tune uses the newest window: its older ``train_rows`` (of which ``new_rows`` are
    sampled) plus ``replay_rows`` older rows for ``epochs`` epochs, early-stopped on its newest
    ``validation_rows`` (a time split inside the new data).
    """

    train_rows: int
    validation_rows: int
    new_rows: int
    replay_rows: int
    epochs: int

    @property
    def samples(self) -> int:
        return (self.new_rows + self.replay_rows) * self.epochs


def plan_fine_tune(window_rows: int, older_rows: int, sample_budget: float, *, validation_share: float = 0.2,
                   min_validation_rows: int = 10, replay_ratio: float = 1.0, max_epochs: int = 8) -> FineTunePlan:
    """
    Size a fine-tune to a compute budget of ``sample_budget`` samples (rows times epochs): the newest window
    split in time (the newest ``validation_share`` for early stopping), ``replay_ratio`` replay rows per new row,
    as many epochs as the budget pays for (1 to ``max_epochs``), fewer rows when one epoch is over budget.
    """
    if window_rows < 1 or older_rows < 0 or not math.isfinite(sample_budget) or sample_budget <= 0:
        raise MlopsConfigurationError(explain("A fine-tune plan needs rows and a budget", expected="window_rows >= 1, "
                                              "older_rows >= 0, sample_budget > 0",
                                              received={"window_rows": window_rows, "older_rows": older_rows,
                                                        "sample_budget": sample_budget}))
    validation = int(window_rows * validation_share)
    if validation < min_validation_rows or window_rows - validation < 1:
        validation = 0
    train = window_rows - validation
    replay = min(older_rows, int(train * replay_ratio))
    per_epoch = train + replay
    epochs = int(max(1, min(max_epochs, sample_budget // per_epoch)))
    new, rep = train, replay
    if sample_budget < per_epoch:
        keep = sample_budget / per_epoch
        new, rep = max(1, int(train * keep)), int(replay * keep)
    return FineTunePlan(train_rows=train, validation_rows=validation, new_rows=new, replay_rows=rep, epochs=epochs)
