"""Storage round trips against a real S3 endpoint (moto server over HTTP on loopback)."""

from __future__ import annotations

import os

import pytest

from airflow_mlops.exceptions import StorageError
from airflow_mlops.hooks.storage import LocalStorage, S3Storage, Storage, get_storage

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_env):
    return s3_env.create_bucket(f"rt-{os.getpid()}-{os.urandom(3).hex()}")


def test_s3_round_trip(bucket, tmp_path, monkeypatch):
    import airflow_mlops.hooks.storage as storage_mod

    monkeypatch.setattr(storage_mod, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)
    monkeypatch.setattr(storage_mod, "MULTIPART_CHUNKSIZE", 5 * 1024 * 1024)
    s3 = get_storage(f"s3://{bucket}/x")
    assert isinstance(s3, S3Storage) and isinstance(s3, Storage)
    s3.write_bytes(f"s3://{bucket}/a/one.bin", b"hello")
    assert s3.exists(f"s3://{bucket}/a/one.bin")
    assert not s3.exists(f"s3://{bucket}/a/missing.bin")
    assert s3.read_bytes(f"s3://{bucket}/a/one.bin") == b"hello"

    big = tmp_path / "big.bin"
    payload = os.urandom(12 * 1024 * 1024)  # above the threshold: multipart upload
    big.write_bytes(payload)
    s3.upload_file(str(big), f"s3://{bucket}/a/b/big.bin")
    assert s3.size(f"s3://{bucket}/a/b/big.bin") == len(payload)
    head = s3.client.head_object(Bucket=bucket, Key="a/b/big.bin")
    assert "-" in head["ETag"], "expected a multipart ETag"
    s3.download_file(f"s3://{bucket}/a/b/big.bin", str(tmp_path / "back.bin"))
    assert (tmp_path / "back.bin").read_bytes() == payload

    assert s3.list(f"s3://{bucket}/a/") == [f"s3://{bucket}/a/b/big.bin", f"s3://{bucket}/a/one.bin"]
    assert s3.delete_prefix(f"s3://{bucket}/a/") == 2
    assert s3.list(f"s3://{bucket}/a/") == []
    with pytest.raises(StorageError, match="Cannot read S3 object"):
        s3.read_bytes(f"s3://{bucket}/a/one.bin")


def test_local_round_trip_is_atomic(tmp_path):
    store = LocalStorage()
    target = tmp_path / "d" / "f.bin"
    store.write_bytes(str(target), b"1")
    store.write_bytes(str(target), b"22")
    assert store.read_bytes(str(target)) == b"22"
    assert [p for p in os.listdir(target.parent) if p.startswith(".tmp-")] == []
    assert store.list(str(tmp_path)) == [str(target)]
