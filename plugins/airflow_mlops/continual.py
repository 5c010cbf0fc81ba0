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


def _check_paths(data_root: str | None, **paths: Any) -> None:
    from airflow_mlops.validation.batches import check_under_root

    for name, path in paths.items():
        check_under_root(str(path), data_root or None, what=name)


def _plan_uri(train_uri: str, prefix: str) -> str:
    """``train_<window>.csv`` renamed ``<prefix><window>.csv`` in the same folder (the folder's name is kept)."""
    folder, sep, name = train_uri.rpartition("/")
    return f"{folder}{sep}{name.replace('train_', prefix, 1)}"


def resolve_request(spec: ModelSpec, default_source: str, params: dict[str, Any],
                    extra: dict[str, Any], data_root: str | None = None) -> dict[str, Any]:
    """
    The training request from the drift event's ``extra`` (or the Params, which win), with the champion to start
    from: a fine-tune without a champion checkpoint becomes a retrain, since there is nothing to start from.

    The window bounds are typed (dates or numbers, as ``spec.time_type`` says) and ``source_uri`` must lie under
    ``data_root`` (None: the data folder; ``"/"`` opts out), both checked before anything is read or written:
    an asset event's extra is as untrusted as a Param.
    """
    from airflow_mlops.datasets import check_window_bound
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
    check_window_bound(start, spec.time_type, "Window start")
    check_window_bound(end, spec.time_type, "Window end")
    source_uri = params.get("source_uri") or extra.get("source_uri") or default_source
    _check_paths(data_root, source_uri=source_uri)
    champion = RegistryService(MlflowHook().client).version_for_alias(spec.name, "champion")
    init = None
    if action == "fine_tune":
        init = (champion.tags or {}).get(CHECKPOINT_URI) if champion is not None else None
        if not init:
            action = "retrain"
    return {
        "action": action,
        "source_uri": source_uri,
        "train_start": span_start(start, float(params.get("recent_span") or 0), spec.time_type),
        "train_end": end,
        "parent_version": str(champion.version) if champion is not None and action == "fine_tune" else None,
        "init_checkpoint_uri": init,
        "reason": extra.get("reason") or "requested by hand",
        "fine_tune_cost": params.get("fine_tune_cost") or extra.get("fine_tune_cost"),
        # What the trigger policy allowed this training to spend (in retrains) and whether it is a refresh.
        "cost": extra.get("cost"),
        "refresh": bool(extra.get("refresh")),
    }


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


def fine_tune_budget(action: str, source_rows: int, retrain_epochs: int, fine_tune_cost: float,
                     sample_budget: float | None = None) -> float:
    """
    Samples (rows x epochs) a training of the continual-learning DAG may use: ``sample_budget`` when given,
    else a share of a retrain's samples (``retrain_epochs`` over the ``source_rows`` up to the window's end):
    ``fine_tune_cost`` for a fine-tune, all of it for a retrain.
    """
    if sample_budget is not None:
        return float(sample_budget)
    cost = 1.0 if action == "retrain" else float(fine_tune_cost)
    return cost * retrain_epochs * source_rows


def prepare_fine_tune(spec: ModelSpec, window: dict[str, Any], source_uri: str, *, action: str = "fine_tune",
                      max_epochs: int = 8, fine_tune_cost: float = 0.03, sample_budget: float | None = None,
                      retrain_epochs: int = 4, max_replay_rows: int | None = None, validation_share: float = 0.2,
                      patience: int = 2, replay_ratio: float = 1.0, data_root: str | None = None,
                      storage_for: Any = None) -> dict[str, Any]:
    """
    The training table and settings of a budgeted fine-tune (or retrain) from the rows there are: a
    :func:`plan_fine_tune` over the window's training rows and the source's older rows, the table written
    beside the window (replay sample, the window's sampled rows, its newest ``validation_rows`` last), and the
    ``early_stopping`` config that holds those newest rows out by ``spec.time_column`` (None when the window is
    too small to spare them or ``patience`` is 0). ``epochs`` is a maximum: early stopping may end sooner.
    ``replay_ratio`` older rows per new row (a refresh replays more of the past than a routine fine-tune).
    The source, the window and the table written must lie under ``data_root`` (None: the data folder; ``"/"``
    opts out), checked before anything is read.
    """
    import pandas as pd

    from airflow_mlops.datasets import read_table, typed_bounds, write_table
    from airflow_mlops.hooks.storage import get_storage

    storage_for = storage_for or get_storage
    out = _plan_uri(window["train_uri"], "train_plan_")
    _check_paths(data_root, source_uri=source_uri, train_uri=window["train_uri"], output=out)
    source = read_table(source_uri, storage_for(source_uri))
    column = spec.time_column
    values, start, end = typed_bounds(source[column], window["start"], window["end"], spec.time_type)
    older = source[values < start]
    source_rows = int((values <= end).sum())
    train = read_table(window["train_uri"], storage_for(window["train_uri"]))
    budget = fine_tune_budget(action, source_rows, retrain_epochs, fine_tune_cost, sample_budget)
    older_rows = len(older) if max_replay_rows is None else min(len(older), int(max_replay_rows))
    plan = plan_fine_tune(len(train), older_rows, budget, validation_share=validation_share, max_epochs=max_epochs,
                          replay_ratio=replay_ratio)
    # The split the workers make again: newest by time, ties in key order (the table is stored in key order).
    by_time = train.sort_values([c for c in (spec.key_column, column) if c][::-1], kind="stable")
    validation = by_time.iloc[plan.train_rows:]
    fit = by_time.iloc[: plan.train_rows]
    if plan.new_rows < len(fit):
        fit = fit.sample(n=plan.new_rows, random_state=0)
    replay = older.sample(n=plan.replay_rows, random_state=0) if plan.replay_rows else older.iloc[:0]
    order = spec.key_column or column
    # Rows stay in time order: suites may check that keys increase.
    write_table(pd.concat([replay, fit, validation]).sort_values(order, kind="stable").reset_index(drop=True), out,
                storage_for(out))
    early_stopping = None
    if plan.validation_rows and patience > 0:
        early_stopping = {"monitor": "val_loss", "patience": int(patience), "validation_rows": plan.validation_rows,
                          "time_column": column, "restore_best": True}
    return {"train_uri": out, "epochs": plan.epochs, "early_stopping": early_stopping, "action": action,
            "sample_budget": budget, "samples": plan.samples, "train_rows": plan.train_rows,
            "validation_rows": plan.validation_rows, "new_rows": plan.new_rows, "replay_rows": plan.replay_rows,
            "replay_ratio": replay_ratio}
