"""The Great Expectations context every engine validates in: ephemeral, nothing on disk, no progress bars."""

from __future__ import annotations

from typing import Any


def new_gx_context() -> Any:
    """An ephemeral GX context (nothing on disk) with progress bars off: task logs are not terminals."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return context
