"""Settings the rainfall reference DAGs share: where the data is, the model's columns, and its Assets.

Plain constants only (no operators, no I/O), read by the DAG files at parse time. Paths follow
MLOPS_PROJECT_ROOT (the checkout or image folder holding include/) and MLOPS_DATA_DIR.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import Asset

PROJECT_ROOT = Path(os.environ.get("MLOPS_PROJECT_ROOT") or Path(__file__).resolve().parents[3])
DATA_DIR = os.environ.get("MLOPS_DATA_DIR", str(PROJECT_ROOT / "data"))
SOURCE_URI = f"{DATA_DIR}/rainfall/rainfall.parquet"
SUITE_PATH = str(PROJECT_ROOT / "include" / "expectations" / "rainfall.json")
MODEL_NAME = "rainfall"
EXPERIMENT = "rainfall"
TARGET = "rain"
FEATURES = [
    "temperature",
    "dew_point",
    "sea_level_pressure",
    "visibility",
    "average_wind_speed",
    "max_sustained_wind_speed",
    "minimum_temperature",
    "maximum_temperature",
]
MODEL_KWARGS = {"in_features": len(FEATURES), "hidden_sizes": [64, 32]}

STAGING_ASSET = Asset("mlops://models/rainfall/staging", extra={"model": MODEL_NAME, "alias": "staging"})
PRODUCTION_ASSET = Asset("mlops://models/rainfall/production", extra={"model": MODEL_NAME, "alias": "production"})
DRIFT_ASSET = Asset("mlops://drift/rainfall", extra={"model": MODEL_NAME})
PREDICTIONS_ASSET = Asset("mlops://predictions/rainfall")
