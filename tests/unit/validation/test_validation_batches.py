"""Paths, formats and digests of batches; quarantine folder names."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta, timezone

import pytest

from airflow_mlops.hooks.storage import LocalStorage
from airflow_mlops.validation import (
    REASON_FILE,
    BatchNotFoundError,
    BatchReadError,
    DataFormat,
    PathOutsideRootError,
    bytes_digest,
    dataset_digest,
    parse_batch,
    quarantine_batch,
    quarantine_folder,
    resolve_data_path,
)
from airflow_mlops.validation.batches import detect_format, read_batch_bytes


@pytest.mark.parametrize(
    ("path", "root", "expected"),
    [
        ("s3://b/data/w.csv", "s3://b/data", "s3://b/data/w.csv"),
        ("s3://b/data/x/w.csv", "s3://b/data/", "s3://b/data/x/w.csv"),
        ("s3://b/w.csv", None, "s3://b/w.csv"),
        ("s3://b/w.csv", "s3://b", "s3://b/w.csv"),
    ],
)
def test_resolve_s3_inside(path, root, expected):
    assert resolve_data_path(path, root) == expected


@pytest.mark.parametrize(
    ("path", "root"),
    [
        ("s3://b/data/../secret.csv", "s3://b/data"),
        ("s3://b/data/../secret.csv", None),
        ("s3://b/data/./x/../w.csv", "s3://b/data"),
        ("s3://other/data/w.csv", "s3://b/data"),
        ("s3://b/database/w.csv", "s3://b/data"),
        ("s3://b/data/w.csv", "/local/root"),
    ],
)
def test_resolve_s3_outside(path, root):
    with pytest.raises(PathOutsideRootError, match="leaves the allowed root"):
        resolve_data_path(path, root)


def test_resolve_local(tmp_path):
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    assert resolve_data_path(str(root / "sub" / ".." / "w.csv"), str(root)) == str((root / "w.csv").resolve())
    assert resolve_data_path(f"file://{root}/w.csv", str(root)) == str((root / "w.csv").resolve())
    with pytest.raises(PathOutsideRootError, match="outside the allowed root"):
        resolve_data_path(str(root / ".." / "w.csv"), str(root))
    with pytest.raises(PathOutsideRootError):
        resolve_data_path(str(tmp_path / "rootless" / "w.csv"), str(root))  # a sibling sharing the prefix
    with pytest.raises(BatchNotFoundError, match="No data path"):
        resolve_data_path("", None)


@pytest.mark.parametrize(
    ("path", "data", "declared", "expected"),
    [
        ("a.parquet", b"", DataFormat.AUTO, DataFormat.PARQUET),
        ("a.PQ", b"", DataFormat.AUTO, DataFormat.PARQUET),
        ("a.csv", b"PAR1", DataFormat.AUTO, DataFormat.CSV),
        ("a.bin", b"PAR1....", DataFormat.AUTO, DataFormat.PARQUET),
        ("a.bin", b"x,y\n", DataFormat.AUTO, DataFormat.CSV),
        ("a.csv", b"", DataFormat.PARQUET, DataFormat.PARQUET),
    ],
)
def test_detect_format(path, data, declared, expected):
    assert detect_format(path, data, declared) is expected


def test_parse_csv_and_parquet_without_extension(tmp_path):
    import pandas as pd

    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    df.to_parquet(tmp_path / "blob", index=False)
    assert parse_batch("blob", (tmp_path / "blob").read_bytes()).equals(df)
    assert parse_batch("blob", b"a,b\n1,x\n2,y\n").equals(df)
    with pytest.raises(BatchReadError, match="not a Parquet file"):
        parse_batch("x.csv", b"a,b\n1,2\n", DataFormat.PARQUET)


def test_digests_agree(tmp_path):
    path = tmp_path / "f.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    path.write_bytes(data)
    expected = "sha256:" + hashlib.sha256(data).hexdigest()
    assert dataset_digest(str(path)) == expected == bytes_digest(data)
    assert dataset_digest(f"file://{path}", LocalStorage()) == expected


def test_missing_files(tmp_path):
    with pytest.raises(BatchNotFoundError, match="does not exist"):
        read_batch_bytes(str(tmp_path / "nope.csv"), LocalStorage())
    with pytest.raises(BatchNotFoundError, match="Cannot read .*nope.csv to compute its digest"):
        dataset_digest(str(tmp_path / "nope.csv"))


@pytest.mark.parametrize(
    ("root", "path", "now", "expected"),
    [
        ("/q", "/data/w.csv", datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "/q/20240102T030405000006Z-w.csv"),
        ("s3://b/q/", "s3://b/d/w 1.parquet", datetime(2024, 1, 2, tzinfo=UTC), "s3://b/q/20240102T000000000000Z-w_1.parquet"),
        ("/q", "/data/w.csv", datetime(2024, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2))), "/q/20240102T030000000000Z-w.csv"),
    ],
)
def test_quarantine_folder(root, path, now, expected):
    assert quarantine_folder(root, path, now) == expected


def test_quarantine_writes_copy_then_reason(tmp_path):
    src = tmp_path / "w.csv"
    src.write_bytes(b"a\n1\n")
    folder = quarantine_batch(str(src), src.read_bytes(), str(tmp_path / "q"), {"failures": [{"x": 1}]},
                              LocalStorage(), now=datetime(2024, 1, 1, tzinfo=UTC))
    assert sorted(os.listdir(folder)) == [REASON_FILE, "w.csv"]
    reason = json.loads(open(os.path.join(folder, REASON_FILE)).read())
    assert reason["failures"] == [{"x": 1}] and reason["data_uri"] == str(src)
    assert reason["quarantined_at"].startswith("2024-01-01T00:00:00")
    assert src.read_bytes() == b"a\n1\n"
