"""Data Docs: GX's own HTML page for one validation result, rendered without a file-backed context."""

from __future__ import annotations

import copy
from typing import Any


def _plain(value: Any) -> Any:
    # GX's renderer formats numbers through Decimal and rejects numpy scalars (column means, medians).
    if hasattr(value, "item") and not isinstance(value, (list, tuple, dict)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def render_data_docs(result: Any) -> str:
    """HTML of GX's validation results page for an ``ExpectationSuiteValidationResult``."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    result = copy.deepcopy(result)
    for item in result.results:
        if isinstance(item.result, dict):
            item.result = {k: _plain(v) for k, v in item.result.items()}
    document = ValidationResultsPageRenderer(run_info_at_end=True).render(result)
    return DefaultJinjaPageView().render(document)
