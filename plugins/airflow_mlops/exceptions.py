"""One small exception hierarchy: every message says what was expected, what came, and what to do."""

from __future__ import annotations


def explain(problem: str, *, expected: str | None = None, received: object = None, hint: str | None = None) -> str:
    """Build a message in the project's format: problem, expected, received, hint."""
    parts = [problem.rstrip(".") + "."]
    if expected is not None:
        parts.append(f"Expected: {expected}.")
    if received is not None:
        parts.append(f"Received: {received!r}.")
    if hint:
        parts.append(f"Hint: {hint}")
    return " ".join(parts)


class MlopsError(Exception):
    """Base class of every error raised by airflow-mlops."""


class MlopsConfigurationError(MlopsError, ValueError):
    """An argument, Param, connection or config file is wrong; fix the input and rerun."""


class StorageError(MlopsError):
    """Reading or writing a local path or an s3:// object failed."""


class DataValidationError(MlopsError):
    """A data batch failed its expectation suite; downstream tasks must not run."""

    def __init__(self, message: str, summary: dict | None = None) -> None:
        super().__init__(message)
        self.summary = summary or {}


class TrainingError(MlopsError):
    """The training processes failed or produced no usable result."""


class TrackingUnavailableError(MlopsError):
    """MLflow stayed unreachable past the retry budget; the task fails so that Airflow's retry takes over."""


class CheckpointError(MlopsError):
    """A checkpoint could not be written, committed or read."""


class CheckpointCorruptError(CheckpointError):
    """A committed checkpoint does not match its manifest (checksum mismatch or missing file)."""


class CheckpointFencedError(CheckpointError):
    """A newer try of the run owns the checkpoint folder; this (stale) writer may not commit or delete there."""


class RegistryError(MlopsError):
    """Registering, evaluating or promoting a model version failed."""


class LineageIncompleteError(RegistryError, ValueError):
    """A lineage record misses required fields; registration is refused."""

    def __init__(self, missing: list[str]) -> None:
        self.missing = sorted(missing)
        super().__init__(
            explain(
                "Lineage record is incomplete, the model version was not registered",
                expected="every required lineage field to be present and non-empty",
                received=self.missing,
                hint="pass the missing fields (data digest from validation, checkpoint URI from training, ...) "
                "or check the upstream task that produces them.",
            )
        )


class ModelOutputError(MlopsError, ValueError):
    """A model's output (or the targets it is scored against) does not fit the declared learning task."""


class LockTimeoutError(RegistryError):
    """Another promotion or rollback of the same model held the registry lock for too long."""


class LockLostError(RegistryError):
    """A registry lock holder was taken over (paused or cut off past the lock's ttl); its decision is void."""


class PromotionRejectedError(RegistryError):
    """The promotion gate rejected a challenger; no alias was moved."""


class DriftError(MlopsError):
    """Drift detection could not run on the given windows."""
