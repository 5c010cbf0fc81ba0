"""S3 fixtures for validation tests: a fresh bucket on the session's moto server, reached over HTTP."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class ValidationBucket:
    name: str
    endpoint_url: str
    client: object

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def put(self, key: str, data: bytes) -> str:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)
        return self.uri(key)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def keys(self, prefix: str = "") -> list[str]:
        page = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix)
        return sorted(o["Key"] for o in page.get("Contents", []))


@pytest.fixture
def validation_bucket(s3_env) -> Iterator[ValidationBucket]:
    """A new bucket on moto's server (started once per session by ``s3_srv``); AWS env points at it."""
    name = s3_env.create_bucket(f"validation-{os.getpid()}-{os.urandom(3).hex()}")
    yield ValidationBucket(name=name, endpoint_url=s3_env.endpoint_url, client=s3_env.client())


@pytest.fixture
def aws_conn(s3_srv, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Airflow ``aws`` connection (from the environment) pointing at the moto server."""
    conn = {
        "conn_type": "aws",
        "login": s3_srv.access_key,
        "password": s3_srv.secret_key,
        "extra": {"endpoint_url": s3_srv.endpoint_url, "region_name": s3_srv.region},
    }
    monkeypatch.setenv("AIRFLOW_CONN_VALIDATION_S3", json.dumps(conn))
    return "validation_s3"
