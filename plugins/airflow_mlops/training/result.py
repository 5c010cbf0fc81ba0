"""The outcome of a training run as rank 0 writes it to ``<output_dir>/result.json``."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from airflow_mlops.exceptions import TrainingError, explain
from airflow_mlops.hooks.storage import Storage, get_storage, join

RESULT_FILE = "result.json"


@dataclass
class TrainingResult:
    """
    What a finished run produced.

    ``checkpoint_uri`` is the best committed checkpoint by the policy's monitored metric (the last one when
    nothing is ranked); ``last_checkpoint_uri`` holds the final weights.
    """

    checkpoint_uri: str
    last_checkpoint_uri: str
    metrics: dict[str, float | None]
    epochs: int
    steps: int
    world_size: int
    samples_per_second: float
    duration_s: float
    resumed_from: str | None = None
    best_checkpoint_uri: str | None = None
    run_name: str | None = None
    strategy: str | None = None
    model_factory: str | None = None
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingResult:
        known = {f.name for f in fields(cls)}
        missing = sorted(k for k in ("checkpoint_uri", "last_checkpoint_uri", "metrics", "steps") if k not in data)
        if missing:
            raise TrainingError(
                explain("The training result is incomplete", expected="checkpoint_uri, metrics, steps, ...",
                        received=f"missing {missing}")
            )
        kwargs = {k: v for k, v in data.items() if k in known and k != "extra"}
        extra = dict(data.get("extra") or {}) | {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)


def result_uri(output_dir: str) -> str:
    return join(output_dir, RESULT_FILE)


def read_result(output_dir: str, storage: Storage | None = None) -> TrainingResult:
    uri = result_uri(output_dir)
    storage = storage or get_storage(uri)
    if not storage.exists(uri):
        raise TrainingError(
            explain("The training processes exited without a result", expected=f"{uri} written by rank 0",
                    received="no file", hint="read the worker log lines above for the cause.")
        )
    try:
        return TrainingResult.from_dict(json.loads(storage.read_bytes(uri)))
    except json.JSONDecodeError as exc:
        raise TrainingError(explain("result.json is not valid JSON", expected="a JSON object",
                                    received=str(exc))) from exc


def write_result(output_dir: str, result: TrainingResult, storage: Storage | None = None) -> str:
    uri = result_uri(output_dir)
    storage = storage or get_storage(uri)
    storage.write_bytes(uri, json.dumps(result.to_dict(), indent=1, sort_keys=True).encode("utf-8"))
    return uri
