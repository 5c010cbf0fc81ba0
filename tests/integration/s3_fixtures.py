"""S3 fixtures for training tests: a fresh bucket on the session's moto server (real HTTP on loopback)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass(frozen=True)
class TrainingBucket:
    name: str
    client: Any
    env: dict[str, str]

    def uri(self, key: str = "") -> str:
        return f"s3://{self.name}/{key}".rstrip("/")

    def keys(self, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
            out.extend(obj["Key"] for obj in page.get("Contents", []))
        return sorted(out)


@pytest.fixture
def training_bucket(s3_env) -> Iterator[TrainingBucket]:
    """A new bucket per test; AWS_* variables point this process and the torchrun workers at moto."""
    name = f"training-{uuid.uuid4().hex[:10]}"
    s3_env.create_bucket(name)
    yield TrainingBucket(name=name, client=s3_env.client(), env=s3_env.env())
