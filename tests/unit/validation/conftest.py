"""Fixtures for validation tests: the real rainfall table, windows of it, and the bundled suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
SUITE = REPO / "include" / "expectations" / "rainfall.json"
FEATURE_SPEC = REPO / "include" / "features" / "rainfall.json"
sys.path.insert(0, str(REPO / "tests" / "data" / "bad_inputs"))


@pytest.fixture(scope="session")
def rainfall_df(rainfall_source: str):
    import pandas as pd

    return pd.read_parquet(rainfall_source)


@pytest.fixture
def window(rainfall_df):
    """A 60-day window of the real data (the size of a drift batch)."""
    return rainfall_df.iloc[1000:1060].reset_index(drop=True)


@pytest.fixture
def suite_path() -> str:
    return str(SUITE)


@pytest.fixture
def roots(tmp_path: Path) -> dict[str, Path]:
    data, quarantine = tmp_path / "data", tmp_path / "quarantine"
    data.mkdir()
    return {"data": data, "quarantine": quarantine}
