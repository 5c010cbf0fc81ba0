"""The MLflow model registry as the project uses it: idempotent registration, aliases and their history."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_mlops.exceptions import LockTimeoutError, RegistryError, explain  # noqa: F401 - re-exported
from airflow_mlops.lineage import LineageRecord, check_complete
from airflow_mlops.registry import tags
from airflow_mlops.registry.gate import GateDecision, GatePolicy
from airflow_mlops.registry.lock import (  # noqa: F401 - LOCK_PREFIX re-exported
    DEFAULT_TTL_S,
    DEFAULT_WAIT_S,
    LOCK_PREFIX,
    RegistryLock,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from airflow_mlops.registry.packaging import PackagedModel

log = logging.getLogger(__name__)



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


@dataclass(frozen=True)
class PromotionOutcome:
    """Everything one promotion decided: whether the aliases moved, why, the gate's checks and the moves."""

    name: str
    version: str
    aliases: list[str]
    promoted: bool
    reason: str
    checks: list[dict] = field(default_factory=list)
    moves: list[AliasMove] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "promoted": self.promoted, "reason": self.reason,
                "checks": self.checks, "moves": [m.to_dict() for m in self.moves], "aliases": list(self.aliases)}


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
        found = self.client.search_model_versions(f"name = '{name}' and tags.`{tags.SOURCE_KEY}` = '{escaped}'")
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
        *,
        meta: PackagedModel,
        code_paths: list[str] | None = None,
        description: str | None = None,
        datasets: list[tuple[Any, str]] | None = None,
    ) -> ModelVersion:
        """
        Log ``model`` to ``run_id`` (weights and spec, served by the package's pyfunc) and register it, once per
        ``source_key``. The signature comes from the model's real output on ``input_example``. ``datasets``
        (``(mlflow dataset, context)``) are logged as the run's inputs; the version's description summarises its
        lineage, so MLflow's own UI shows where it came from.
        """
        check_complete(lineage)
        existing = self.find_version_by_source(name, source_key)
        if existing is not None:
            log.info("Model %s version %s already registered for %s; reusing it", name, existing.version, source_key)
            return existing
        import mlflow
        import torch

        from airflow_mlops.registry.packaging import lineage_summary, log_packaged_model

        self.ensure_registered_model(name, description=description)
        with mlflow.start_run(run_id=run_id):
            for dataset, context in datasets or []:
                mlflow.log_input(dataset, context=context)
            info = log_packaged_model(
                model, meta, input_example, code_paths=code_paths,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", f"mlflow=={mlflow.__version__}"],
            )
            mlflow.log_text("\n".join(packages) + "\n", "lineage/packages.txt")
            mlflow.log_dict(lineage.to_dict(), "lineage/lineage.json")
        version_tags = {**lineage.to_tags(), tags.SOURCE_KEY: source_key, tags.TASK: meta.task,
                        **(extra_tags or {})}
        # A concurrent retry may have registered in between: check again right before creating.
        existing = self.find_version_by_source(name, source_key)
        if existing is not None:
            return existing
        mv = self.client.create_model_version(name, source=info.model_uri, run_id=run_id, tags=version_tags,
                                               model_id=getattr(info, "model_id", None),
                                               description=lineage_summary(lineage.to_dict(), meta.task))
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
        with self.lock(name, owner) as held:
            holders = {alias: self.version_for_alias(name, alias) for alias in aliases}
            if all(h is not None and str(h.version) == str(version) for h in holders.values()):
                # A retry of a promotion that already happened: nothing to move, nothing to record.
                return True, [], f"already promoted: {', '.join(aliases)} point at v{version}"
            for alias, want in (expected or {}).items():
                current = self.version_for_alias(name, alias)
                have = current.version if current is not None else None
                if (str(have) if have is not None else None) != (str(want) if want is not None else None):
                    why = (f"{alias} moved from v{want} to v{have} since the evaluation; "
                           "evaluate again against the new holder")
                    self.record_rejection(name, version, aliases, dag_run, why)
                    return False, [], why
            held.ensure_held()  # a holder paused past its ttl must not move aliases another holder now owns
            moves = [self.set_alias(name, alias, version, dag_run, reason) for alias in aliases]
            return True, moves, reason

    def promote_version(
        self,
        name: str,
        version: str,
        aliases: list[str],
        dag_run: str,
        *,
        evaluation: dict[str, Any] | None = None,
        gate: GatePolicy | None = None,
        champion_alias: str = "champion",
        decide: Callable[[dict[str, float], dict[str, float] | None, GatePolicy], GateDecision] | None = None,
    ) -> PromotionOutcome:
        """
        Decide and carry out one promotion, writing every tag and history entry it implies.

        With ``gate``, the challenger's metrics in ``evaluation`` are judged against the champion's (``decide``,
        default :func:`airflow_mlops.registry.gate.decide`); without, the version must already carry a passed
        gate (``staging`` -> ``production`` after an approval). Aliases move under the registry lock and only if
        the champion is still the one the evaluation used.
        """
        from airflow_mlops.registry.gate import decide as gate_decide

        mv = require_version(self, name, version)
        expected: dict[str, str | None] = {}
        evaluation = evaluation or {}
        if gate is not None:
            if not evaluation.get("challenger"):
                from airflow_mlops.exceptions import MlopsConfigurationError

                raise MlopsConfigurationError(
                    explain("A gate needs the evaluation result", expected="evaluation with 'challenger' metrics",
                            received=sorted(evaluation), hint="pass the evaluation task's output.")
                )
            decision = (decide or gate_decide)(evaluation["challenger"], evaluation.get("champion"), gate)
            expected[champion_alias] = evaluation.get("champion_version")
            self.client.set_model_version_tag(name, version, tags.GATE_METRIC, gate.metric)
            self._tag_decision(name, version, decision.promote, decision.reason)
        else:
            if "champion_version" in evaluation:
                expected[champion_alias] = evaluation.get("champion_version")
            passed = (mv.tags or {}).get(tags.DECISION) == "promote"
            earlier = (mv.tags or {}).get(tags.REASON, "")
            decision = GateDecision(
                passed,
                earlier if passed else f"v{version} has not passed a promotion gate "
                f"({tags.DECISION}={(mv.tags or {}).get(tags.DECISION)!r})",
            )
        if not decision.promote:
            if gate is not None:  # a version that failed its gate earlier was recorded then, not again here
                self.record_rejection(name, version, aliases, dag_run, decision.reason)
            return PromotionOutcome(name, version, aliases, False, decision.reason, decision.checks, [])
        promoted, moves, reason = self.promote(name, version, aliases, dag_run, decision.reason, expected=expected)
        if not promoted:
            self._tag_decision(name, version, False, reason)
        return PromotionOutcome(name, version, aliases, promoted, reason, decision.checks, moves)

    def _tag_decision(self, name: str, version: str, promote: bool, reason: str) -> None:
        self.client.set_model_version_tag(name, version, tags.DECISION, "promote" if promote else "reject")
        self.client.set_model_version_tag(name, version, tags.REASON, reason[:5000])

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
            if (move["action"] in ("promote", "rollback") and move["to_version"] == str(current.version)
                    and move["from_version"] != str(current.version)):
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
        key = f"{tags.ALIAS_MOVE_PREFIX}{time.time_ns():020d}"
        self.client.set_registered_model_tag(name, key, json.dumps(move.to_dict(), sort_keys=True))

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """
        The recorded alias moves of ``name`` (oldest first), optionally for one alias, cross-checked against
        the registry: malformed entries, moves to or from versions that do not exist and moves that do not chain
        up to the alias's actual version are left out with a warning, never acted on.
        """
        model = self.client.get_registered_model(name)
        entries: list[dict[str, Any]] = []
        for key, value in sorted((model.tags or {}).items()):
            if not key.startswith(tags.ALIAS_MOVE_PREFIX):
                continue
            entry = tags.parse_alias_move(value)
            if entry is None:
                log.warning("Ignoring malformed alias history tag %s of %s: %.200r", key, name, value)
            elif alias is None or entry["alias"] == alias:
                entries.append(entry)
        if not entries:
            return []
        existing = {str(v.version) for v in self.client.search_model_versions(f"name = '{name}'")}
        known = []
        for entry in entries:
            if entry["to_version"] in existing and entry["from_version"] in (None, *existing):
                known.append(entry)
            else:
                log.warning("Ignoring alias history entry of %s naming a version the registry does not hold: %s",
                            name, entry)
        kept_all: list[dict[str, Any]] = []
        for one in sorted({e["alias"] for e in known}):
            current = self.version_for_alias(name, one)
            kept, dropped = tags.consistent_moves([e for e in known if e["alias"] == one],
                                                  str(current.version) if current is not None else None)
            for entry in dropped:
                log.warning("Ignoring alias history entry of %s that does not chain up to alias %r's actual "
                            "version: %s", name, one, entry)
            kept_all.extend(kept)
        order = {id(e): i for i, e in enumerate(known)}
        return sorted(kept_all, key=lambda e: order[id(e)])

    def registered_checkpoints(self, name: str) -> list[str]:
        """Checkpoint URIs that versions of ``name`` were registered from (retention must keep them)."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client.search_model_versions(f"name = '{name}'")
        except MlflowException:
            return []
        return sorted({v.tags[tags.CHECKPOINT_URI] for v in versions if v.tags.get(tags.CHECKPOINT_URI)})

    def version_metrics(self, version: ModelVersion, prefix: str = tags.EVAL_PREFIX) -> dict[str, float]:
        """Evaluation metrics recorded on a version as tags ``eval.<metric>``."""
        return tags.metrics_from_tags(version.tags or {}, prefix)


def require_version(service: RegistryService, name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return service.client.get_model_version(name, str(version))
    except MlflowException as exc:
        raise RegistryError(
            explain(f"Model version {name} v{version} not found", expected="a registered version",
                    received=str(version), hint="check the upstream registration task's XCom.")
        ) from exc
