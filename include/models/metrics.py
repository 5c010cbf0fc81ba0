"""User metrics of the reference pipelines: plain functions ``(y_true, scores) -> float``."""

from __future__ import annotations

import numpy as np


def error_rate(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Share of rows whose most probable class is wrong (lower is better)."""
    return float((np.asarray(scores).argmax(axis=1) != np.asarray(y_true)).mean())
