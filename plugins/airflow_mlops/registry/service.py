"""The MLflow model registry as the project uses it: idempotent registration, aliases and their history."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import LockTimeoutError, RegistryError, explain  # noqa: F401 - re-exported
from airflow_mlops.lineage import LineageRecord, check_complete
from airflow_mlops.registry.lock import (  # noqa: F401 - LOCK_PREFIX re-exported
    DEFAULT_TTL_S,
    DEFAULT_WAIT_S,
    LOCK_PREFIX,
    RegistryLock,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

SOURCE_KEY_TAG = "mlops.source_key"
ALIAS_MOVE_TAG_PREFIX = "mlops.alias_move."
DECISION_TAG = "mlops.gate.decision"
REASON_TAG = "mlops.gate.reason"

@dataclass(frozen=True)
class AliasMove:
    alias: str
    from_version: str | None
    to_version: str
    time: float
    dag_run: str
    reason: str
    action: str = "promote"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RegistryService:
    """Operations on one MLflow registry through an ``MlflowClient``."""

    def __init__(self, client: MlflowClient) -> None:
        self.client = client

    # --- versions -------------------------------------------------------------------------------------------

    def ensure_registered_model(self, name: str, description: str | None = None) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            try:
                self.client.create_registered_model(name, description=description)
            except MlflowException:
                self.client.get_registered_model(name)  # created concurrently: fine

    def find_version_by_source(self, name: str, source_key: str) -> ModelVersion | None:
        escaped = source_key.replace("'", "\\'")
        found = self.client.search_model_versions(f"name = '{name}' and tags.`{SOURCE_KEY_TAG}` = '{escaped}'")
        return sorted(found, key=lambda v: int(v.version))[0] if found else None

    def register(
        self,
        name: str,
        model: Any,
        run_id: str,
        lineage: LineageRecord,
        source_key: str,
        input_example: Any,
        packages: list[str],
        extra_tags: dict[str, str] | None = None,
    ) -> ModelVersion:
        """Log ``model`` (PyTorch flavour) to ``run_id`` and register it, once per ``source_key``."""
        check_complete(lineage)
        existing = self.find_version_by_source(name, source_key)
        if existing is not None:
            log.info("Model %s version %s already registered for %s; reusing it", name, existing.version, source_key)
            return existing
        import mlflow
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        from airflow_mlops.registry.evaluation import predict_proba

        self.ensure_registered_model(name)
        signature = infer_signature(input_example, predict_proba(model, input_example))
        with mlflow.start_run(run_id=run_id):
            info = mlflow.pytorch.log_model(
                model,
                name="model",
                signature=signature,
                input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            )
            mlflow.log_text("\n".join(packages) + "\n", "lineage/packages.txt")
            mlflow.log_dict(lineage.to_dict(), "lineage/lineage.json")
        tags = {**lineage.to_tags(), SOURCE_KEY_TAG: source_key, **(extra_tags or {})}
        # A concurrent retry may have registered in between: check again right before creating.
        existing = self.find_version_by_source(name, source_key)
        if existing is not None:
            return existing
        mv = self.client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=tags,
                                               model_id=getattr(info, "model_id", None))
        self._wait_ready(name, mv.version)
        return self.client.get_model_version(name, mv.version)

    def _wait_ready(self, name: str, version: str, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            mv = self.client.get_model_version(name, version)
            if mv.status == "READY":
                return
            if mv.status == "FAILED_REGISTRATION":
                raise RegistryError(f"Registration of {name} v{version} failed: {mv.status_message}")
            time.sleep(0.5)
        raise RegistryError(f"{name} v{version} not READY after {timeout_s}s")

    # --- aliases --------------------------------------------------------------------------------------------

    def version_for_alias(self, name: str, alias: str) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(name, alias)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str, dag_run: str, reason: str,
                  action: str = "promote") -> AliasMove:
        """Point ``alias`` at ``version`` and record the move in the registered model's history."""
        current = self.version_for_alias(name, alias)
        from_version = current.version if current is not None else None
        move = AliasMove(alias=alias, from_version=from_version, to_version=str(version), time=time.time(),
                         dag_run=dag_run, reason=reason, action=action)
        if from_version == str(version):
            log.info("Alias %s of %s already points at version %s; nothing to move", alias, name, version)
            return move
        self.client.set_registered_model_alias(name, alias, str(version))
        self._record(name, move)
        return move

    # --- mutual exclusion -----------------------------------------------------------------------------------

    #: Lock timing for promotions and rollbacks; see :class:`~airflow_mlops.registry.lock.RegistryLock`.
    lock_ttl_s: float = DEFAULT_TTL_S
    lock_wait_s: float = DEFAULT_WAIT_S

    @contextmanager
    def lock(self, name: str, owner: str, ttl_s: float | None = None, wait_s: float | None = None,
             ) -> Iterator[RegistryLock]:
        """Exclusive lock over the aliases of ``name`` (:class:`~airflow_mlops.registry.lock.RegistryLock`)."""
        with RegistryLock(self.client, name, owner, ttl_s=ttl_s or self.lock_ttl_s,
                          wait_s=wait_s or self.lock_wait_s) as held:
            yield held

    # --- promotion and rollback -----------------------------------------------------------------------------

    def promote(
        self,
        name: str,
        version: str,
        aliases: list[str],
        dag_run: str,
        reason: str,
        expected: dict[str, str | None] | None = None,
    ) -> tuple[bool, list[AliasMove], str]:
        """
        Move ``aliases`` to ``version`` under the registry lock.

        ``expected`` maps aliases to the version the decision was taken against (e.g. the champion the
        challenger was evaluated against). When one of them moved meanwhile, nothing moves: the decision is
        recorded as a rejection and must be taken again against the new holder.
        """
        owner = f"{dag_run}@{socket.gethostname()}:{os.getpid()}"
        with self.lock(name, owner):
            holders = {alias: self.version_for_alias(name, alias) for alias in aliases}
            if all(h is not None and str(h.version) == str(version) for h in holders.values()):
                # A retry of a promotion that already happened: nothing to move, nothing to record.
                return True, [], f"already promoted: {', '.join(aliases)} point at v{version}"
            for alias, want in (expected or {}).items():
                current = self.version_for_alias(name, alias)
                have = current.version if current is not None else None
                if (str(have) if have is not None else None) != (str(want) if want is not None else None):
                    why = (f"rejected: {alias} moved from v{want} to v{have} since the evaluation; "
                           "evaluate again against the new holder")
                    self.record_rejection(name, version, aliases, dag_run, why)
                    return False, [], why
            moves = [self.set_alias(name, alias, version, dag_run, reason) for alias in aliases]
            return True, moves, reason

    def record_rejection(self, name: str, version: str, aliases: list[str], dag_run: str, reason: str) -> None:
        for alias in aliases:
            current = self.version_for_alias(name, alias)
            self._record(name, AliasMove(alias, current.version if current else None, str(version), time.time(),
                                         dag_run, reason, action="reject"))

    def previous_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` pointed at before its current one, from the recorded history."""
        current = self.version_for_alias(name, alias)
        if current is None:
            return None
        for move in reversed(self.alias_history(name, alias)):
            if move["action"] in ("promote", "rollback") and move["to_version"] == str(current.version):
                return move["from_version"]
        return None

    def rollback(self, name: str, alias: str, dag_run: str, reason: str, to_version: str | None = None) -> AliasMove:
        """Put ``alias`` back on its previous version (or ``to_version``) in one step, under the lock."""
        owner = f"{dag_run}@{socket.gethostname()}:{os.getpid()}"
        with self.lock(name, owner):
            target = to_version or self.previous_version(name, alias)
            if target is None:
                current = self.version_for_alias(name, alias)
                raise RegistryError(
                    explain(f"Nothing to roll back for alias {alias!r} of {name}",
                            expected="an alias whose history holds an earlier version",
                            received=f"current version {current.version if current else None}, no earlier one",
                            hint="pass to_version explicitly.")
                )
            require_version(self, name, target)
            return self.set_alias(name, alias, target, dag_run, reason, action="rollback")

    def _record(self, name: str, move: AliasMove) -> None:
        key = f"{ALIAS_MOVE_TAG_PREFIX}{time.time_ns():020d}"
        self.client.set_registered_model_tag(name, key, json.dumps(move.to_dict(), sort_keys=True))

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every recorded alias move of ``name`` (oldest first), optionally for one alias."""
        model = self.client.get_registered_model(name)
        moves = []
        for key, value in sorted(model.tags.items()):
            if key.startswith(ALIAS_MOVE_TAG_PREFIX):
                entry = json.loads(value)
                if alias is None or entry["alias"] == alias:
                    moves.append(entry)
        return moves

    def registered_checkpoints(self, name: str) -> list[str]:
        """Checkpoint URIs that versions of ``name`` were registered from (retention must keep them)."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return []
        return sorted({v.tags["lineage.checkpoint.uri"] for v in versions if v.tags.get("lineage.checkpoint.uri")})

    def version_metrics(self, version: ModelVersion, prefix: str = "eval.") -> dict[str, float]:
        """Evaluation metrics recorded on a version as tags ``eval.<metric>``."""
        out = {}
        for key, value in (version.tags or {}).items():
            if key.startswith(prefix):
                try:
                    out[key[len(prefix):]] = float(value)
                except ValueError:
                    continue
        return out


def require_version(service: RegistryService, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return service.client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            explain(f"Model version {name} v{version} not found", expected="a registered version",
                    received=str(version), hint="check the upstream registration task's XCom.")
        ) from exc
