"""Generators of bad data batches, each derived from a good window of the rainfall table."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

PNG_HEADER = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89"

Maker = Callable[[Any, Path], Path]
KINDS: dict[str, Maker] = {}


def kind(name: str) -> Callable[[Maker], Maker]:
    def register(fn: Maker) -> Maker:
        KINDS[name] = fn
        return fn

    return register


def _csv(df: Any, folder: Path, name: str) -> Path:
    path = folder / name
    df.to_csv(path, index=False)
    return path


def _parquet(df: Any, folder: Path, name: str) -> Path:
    path = folder / name
    df.to_parquet(path, index=False)
    return path


@kind("empty_file")
def empty_file(df: Any, folder: Path) -> Path:
    path = folder / "empty.csv"
    path.write_bytes(b"")
    return path


@kind("whitespace_only")
def whitespace_only(df: Any, folder: Path) -> Path:
    path = folder / "blank.csv"
    path.write_bytes(b"\n \n\t\n")
    return path


@kind("header_only")
def header_only(df: Any, folder: Path) -> Path:
    return _csv(df.iloc[:0], folder, "header_only.csv")


@kind("missing_column")
def missing_column(df: Any, folder: Path) -> Path:
    return _parquet(df.drop(columns=["visibility"]), folder, "missing_column.parquet")


@kind("extra_column")
def extra_column(df: Any, folder: Path) -> Path:
    out = df.copy()
    out["humidity"] = 0.5
    return _parquet(out, folder, "extra_column.parquet")


@kind("reordered_columns")
def reordered_columns(df: Any, folder: Path) -> Path:
    cols = list(df.columns)
    cols[2], cols[3] = cols[3], cols[2]
    return _csv(df[cols], folder, "reordered.csv")


@kind("wrong_dtype")
def wrong_dtype(df: Any, folder: Path) -> Path:
    out = df.copy()
    out["temperature"] = out["temperature"].astype(object)
    out.loc[out.index[::7], "temperature"] = "warm"
    return _csv(out, folder, "wrong_dtype.csv")


@kind("late_wrong_type")
def late_wrong_type(df: Any, folder: Path) -> Path:
    """Numbers everywhere but two rows deep in the file: GX's first values would all look fine."""
    out = df.copy()
    out["dew_point"] = out["dew_point"].astype(object)
    out.loc[out.index[36], "dew_point"] = "unknown"
    out.loc[out.index[50], "dew_point"] = "12,5"
    return _csv(out, folder, "late_wrong_type.csv")


@kind("float_label")
def float_label(df: Any, folder: Path) -> Path:
    out = df.copy()
    out["rain"] = out["rain"].astype("float64")
    out.loc[out.index[2], "rain"] = 0.5
    return _parquet(out, folder, "float_label.parquet")


@kind("all_null_column")
def all_null_column(df: Any, folder: Path) -> Path:
    out = df.copy()
    out["dew_point"] = float("nan")
    return _parquet(out, folder, "all_null.parquet")


@kind("nan_values")
def nan_values(df: Any, folder: Path) -> Path:
    out = df.copy()
    out.loc[out.index[[3, 11]], "temperature"] = float("nan")
    return _csv(out, folder, "nan.csv")


@kind("inf_values")
def inf_values(df: Any, folder: Path) -> Path:
    out = df.copy()
    out.loc[out.index[4], "average_wind_speed"] = float("inf")
    out.loc[out.index[9], "average_wind_speed"] = float("-inf")
    return _parquet(out, folder, "inf.parquet")


@kind("sentinel_values")
def sentinel_values(df: Any, folder: Path) -> Path:
    out = df.copy()
    out.loc[out.index[5:8], "maximum_temperature"] = -999.0
    return _csv(out, folder, "sentinel.csv")


@kind("unseen_label")
def unseen_label(df: Any, folder: Path) -> Path:
    out = df.copy()
    out.loc[out.index[6], "rain"] = 2
    return _parquet(out, folder, "unseen_label.parquet")


@kind("duplicated_rows")
def duplicated_rows(df: Any, folder: Path) -> Path:
    import pandas as pd

    spike = pd.concat([df, df.iloc[10:40]]).sort_values("day", kind="stable")
    return _parquet(spike, folder, "duplicated.parquet")


@kind("rows_out_of_order")
def rows_out_of_order(df: Any, folder: Path) -> Path:
    return _csv(df.iloc[::-1], folder, "reversed.csv")


@kind("too_few_rows")
def too_few_rows(df: Any, folder: Path) -> Path:
    return _csv(df.iloc[:3], folder, "three_rows.csv")


@kind("bad_date_format")
def bad_date_format(df: Any, folder: Path) -> Path:
    import pandas as pd

    out = df.copy()
    out["date"] = pd.to_datetime(out["date"]).dt.strftime("%d/%m/%Y")
    return _csv(out, folder, "bad_dates.csv")


@kind("truncated_parquet")
def truncated_parquet(df: Any, folder: Path) -> Path:
    good = _parquet(df, folder, "truncated.parquet")
    data = good.read_bytes()
    good.write_bytes(data[: len(data) * 2 // 3])
    return good


@kind("damaged_parquet")
def damaged_parquet(df: Any, folder: Path) -> Path:
    good = _parquet(df, folder, "damaged.parquet")
    data = bytearray(good.read_bytes())
    # Keep both magic markers but scramble the footer length: the reader finds no valid metadata.
    data[-8:-4] = b"\xff\xff\xff\x7f"
    good.write_bytes(bytes(data))
    return good


@kind("latin1_csv")
def latin1_csv(df: Any, folder: Path) -> Path:
    out = df.copy()
    out.insert(len(out.columns), "station", "Orléans")
    path = folder / "latin1.csv"
    path.write_bytes(out.to_csv(index=False).encode("latin-1"))
    return path


@kind("ragged_csv")
def ragged_csv(df: Any, folder: Path) -> Path:
    text = df.to_csv(index=False).splitlines()
    text[5] = text[5] + ",1.0,2.0,3.0"
    path = folder / "ragged.csv"
    path.write_text("\n".join(text) + "\n")
    return path


@kind("png_as_csv")
def png_as_csv(df: Any, folder: Path) -> Path:
    path = folder / "picture.csv"
    path.write_bytes(PNG_HEADER + bytes(range(256)) * 4)
    return path


@kind("random_bytes_as_parquet")
def random_bytes_as_parquet(df: Any, folder: Path) -> Path:
    path = folder / "noise.parquet"
    path.write_bytes(os.urandom(4096))
    return path


@kind("gzip_as_csv")
def gzip_as_csv(df: Any, folder: Path) -> Path:
    import gzip

    path = folder / "compressed.csv"
    path.write_bytes(gzip.compress(df.to_csv(index=False).encode()))
    return path


@kind("missing_file")
def missing_file(df: Any, folder: Path) -> Path:
    return folder / "never_written.csv"


@kind("directory_not_file")
def directory_not_file(df: Any, folder: Path) -> Path:
    path = folder / "a_folder.csv"
    path.mkdir()
    return path


@kind("path_traversal")
def path_traversal(df: Any, folder: Path) -> Path:
    outside = folder.parent / "outside.csv"
    _csv(df, folder.parent, "outside.csv")
    return folder / ".." / outside.name


@kind("symlink_out_of_root")
def symlink_out_of_root(df: Any, folder: Path) -> Path:
    target = _csv(df, folder.parent, "elsewhere.csv")
    link = folder / "link.csv"
    link.symlink_to(target)
    return link


def make(name: str, good_df: Any, folder: Path) -> Path:
    """Write the bad batch ``name`` under ``folder`` (some kinds also write next to it) and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    return KINDS[name](good_df, folder)


def main() -> None:
    import pandas as pd

    repo = Path(__file__).resolve().parents[3]
    sys.path.insert(0, str(repo / "include" / "datasets"))
    from build_rainfall import build

    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bad_inputs")
    good = pd.read_parquet(build(out / "rainfall.parquet")).iloc[1000:1060].reset_index(drop=True)
    for name in KINDS:
        print(name, make(name, good, out / name))


if __name__ == "__main__":
    main()
