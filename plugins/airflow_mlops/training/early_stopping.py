"""Early stopping as a pure decision over per-epoch scores, its resumable state and the newest-rows time split."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import MlopsConfigurationError, explain
from airflow_mlops.tasks import MonitorMode

if TYPE_CHECKING:
    import pandas as pd

    from airflow_mlops.training.config import EarlyStopping

#: Prefix of the metrics of the early-stopping rows (``stop_val_loss``), apart from the evaluation set's ``val_*``.
STOP_PREFIX = "stop_"

# Why a run ended.
NO_IMPROVEMENT = "no_improvement"
MAX_EPOCHS = "max_epochs"
MAX_STEPS = "max_steps"


@dataclass(frozen=True)
class StopState:
    """
    What the stopper knows after the epochs seen so far; saved with every checkpoint, so a resumed run goes on
    counting where the crashed one was.

    :param best: the best monitored value so far (None before the first finite one).
    :param best_epoch: the epoch (1-based, epochs done) that reached it; 0 when none did.
    :param best_step: the optimizer step at the end of that epoch (names its checkpoint).
    :param bad_epochs: epochs in a row without an improvement.
    :param stopped_epoch: the epoch after which training stopped early, None while it goes on.
    :param reason: why the run ended (``no_improvement``, ``max_epochs``, ``max_steps``), None while it goes on.
    """

    best: float | None = None
    best_epoch: int = 0
    best_step: int = -1
    bad_epochs: int = 0
    stopped_epoch: int | None = None
    reason: str | None = None

    @property
    def stopped(self) -> bool:
        return self.stopped_epoch is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StopState:
        """A state from a checkpoint; a checkpoint written without early stopping starts a fresh one."""
        if not data:
            return cls()
        return cls(best=None if data.get("best") is None else float(data["best"]),
                   best_epoch=int(data.get("best_epoch", 0)), best_step=int(data.get("best_step", -1)),
                   bad_epochs=int(data.get("bad_epochs", 0)),
                   stopped_epoch=None if data.get("stopped_epoch") is None else int(data["stopped_epoch"]),
                   reason=data.get("reason"))


def monitored_key(config: EarlyStopping) -> str:
    """The metric key the stopper reads: ``stop_val_loss`` on a split, else the monitor itself."""
    if config.splits and config.monitor.startswith("val_"):
        return STOP_PREFIX + config.monitor
    return config.monitor


def improves(value: float, best: float | None, mode: MonitorMode, min_delta: float) -> bool:
    """Whether ``value`` beats ``best`` by more than ``min_delta``; NaN and infinities never do."""
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode is MonitorMode.MIN else value > best + min_delta


def update(config: EarlyStopping, state: StopState, value: float | None, *, epoch: int, step: int) -> StopState:
    """
    The state after an epoch that ended at ``step`` with ``value`` of the monitored metric: a new best resets
    the count, anything else adds one, and ``patience`` epochs without improvement stop the run.
    """
    if state.stopped:
        return state
    mode = MonitorMode(config.mode) if config.mode is not None else MonitorMode.MIN
    if improves(float("nan") if value is None else float(value), state.best, mode, config.min_delta):
        return replace(state, best=float(value), best_epoch=epoch, best_step=step, bad_epochs=0)  # type: ignore[arg-type]
    bad = state.bad_epochs + 1
    if bad >= config.patience:
        return replace(state, bad_epochs=bad, stopped_epoch=epoch, reason=NO_IMPROVEMENT)
    return replace(state, bad_epochs=bad)


def finish(state: StopState, *, epoch: int, epochs: int) -> StopState:
    """The state of a run that ended without stopping early: it ran out of epochs or of steps."""
    if state.stopped:
        return state
    return replace(state, reason=MAX_EPOCHS if epoch >= epochs else MAX_STEPS)


def split_newest(df: pd.DataFrame, rows: int, time_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """
    The table without its newest ``rows`` rows, and those rows: newest by ``time_column`` (a stable sort, so
    rows with equal times keep their table order), or the last rows when the table is in time order already.
    """
    if time_column is not None:
        if time_column not in df.columns:
            raise MlopsConfigurationError(
                explain("The early-stopping time column is not in the training table", expected=time_column,
                        received=sorted(map(str, df.columns)),
                        hint="name the table's time column in early_stopping.time_column.")
            )
        df = df.sort_values(time_column, kind="stable")
    if not 0 < rows < len(df):
        raise MlopsConfigurationError(
            explain("The early-stopping split leaves no rows on one side", expected=f"1..{len(df) - 1} "
                    "validation rows", received={"validation_rows": rows, "table_rows": len(df)},
                    hint="lower validation_share/validation_rows, or train without early stopping on so few rows.")
        )
    return df.iloc[: len(df) - rows], df.iloc[len(df) - rows:]
