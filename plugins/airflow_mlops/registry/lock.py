"""A registry lock that admits one holder: numbered generations, owner tokens, server-clock expiry, renewal."""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from airflow_mlops.exceptions import LockLostError, LockTimeoutError, explain
from airflow_mlops.registry.tags import (
    LOCK_OWNER_TAG,
    LOCK_PREFIX,
    LOCK_RELEASED_TAG,
    LOCK_TOKEN_TAG,
    LOCK_TTL_TAG,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import RegisteredModel

log = logging.getLogger(__name__)


#: A holder renews every ``ttl / 3``; a crashed holder's lock is free at most ``DEFAULT_TTL_S`` after its
#: last renewal (plus one poll), judged on the registry server's clock.
DEFAULT_TTL_S = 30.0
DEFAULT_WAIT_S = 120.0
_GENERATION = re.compile(r"--g(?P<n>\d{10})$")
# Every way MLflow answers two creators of one name: the unique key, and (SQL store) a conflict answered by
# reading a row that another contender deleted meanwhile.
_CONTENTION_CODES = ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST", "ABORTED", "TEMPORARILY_UNAVAILABLE",
                     "INTERNAL_ERROR", "REQUEST_LIMIT_EXCEEDED")


def generation_name(name: str, generation: int) -> str:
    return f"{LOCK_PREFIX}{name}--g{generation:010d}"


def clock_name(name: str) -> str:
    return f"{LOCK_PREFIX}{name}--clock"


def is_lock_model(registered_model_name: str) -> bool:
    """Whether a registered model is one of the lock's bookkeeping models (UIs hide them)."""
    return registered_model_name.startswith(LOCK_PREFIX)


def is_expired(last_renewed_ms: int, server_now_ms: int, ttl_s: float) -> bool:
    """Expiry on the server's clock alone: both times are stamped by the registry server."""
    return server_now_ms - last_renewed_ms > ttl_s * 1000.0


def _error_code(exc: BaseException) -> str:
    return str(getattr(exc, "error_code", "") or "")


class RegistryLock:
    """
    Exclusive lock over the aliases of one registered model, shared by every process using the registry.

    MLflow has no compare-and-set, but creating a registered model is atomic (the name is a unique key). The
    lock is a chain of generations ``mlops-lock--<name>--g<N>``: a contender takes the lock by creating
    generation N+1 when generation N is released or expired, so of any number of contenders exactly one
    succeeds. Generation numbers are never reused (the newest one is never deleted), so a holder's writes to
    its own generation (renewal, release) can never touch another holder's lock: release is compare-and-set
    by construction. The holder renews every ``ttl_s / 3`` (``update_registered_model`` stamps the server's
    time); contenders judge expiry by comparing that stamp with the server's current time, read by updating a
    separate clock model, so client clocks never matter. A crashed holder frees the model ``ttl_s`` after its
    last renewal at the latest.

    :param client: the registry's client.
    :param name: registered model whose aliases the lock protects.
    :param owner: who holds it, for log lines and errors (e.g. ``dag/run@host:pid``).
    :param ttl_s: how long the lock outlives its holder's last renewal.
    :param wait_s: how long to wait for a held lock before :class:`LockTimeoutError`.
    :param poll_s: the longest pause between two looks at a held lock.
    """

    def __init__(self, client: MlflowClient, name: str, owner: str, ttl_s: float = DEFAULT_TTL_S,
                 wait_s: float = DEFAULT_WAIT_S, poll_s: float = 0.5) -> None:
        self.client = client
        self.name = name
        self.owner = owner
        self.ttl_s = float(ttl_s)
        self.wait_s = float(wait_s)
        self.poll_s = float(poll_s)
        self.token = uuid.uuid4().hex
        self.generation: int | None = None
        self.acquired_after_s: float | None = None
        self._lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # (generation, token, last renewal stamp) -> monotonic time when it may have expired
        self._expiry_guess: dict[tuple[int, str, int], float] = {}

    # ---- reading the chain ---------------------------------------------------------------------------------
    def _generations(self) -> dict[int, RegisteredModel]:
        prefix = f"{LOCK_PREFIX}{self.name}--g"
        escaped = prefix.replace("'", "\\'")
        out: dict[int, RegisteredModel] = {}
        token: str | None = None
        while True:
            page = self.client.search_registered_models(filter_string=f"name LIKE '{escaped}%'", max_results=100,
                                                        page_token=token)
            for model in page:
                match = _GENERATION.search(model.name)
                if model.name.startswith(prefix) and match and len(model.name) == len(prefix) + 10:
                    out[int(match.group("n"))] = model
            token = getattr(page, "token", None)
            if not token:
                return out

    def _newest(self) -> tuple[int, RegisteredModel] | None:
        generations = self._generations()
        if not generations:
            return None
        newest = max(generations)
        return newest, generations[newest]

    def server_now_ms(self) -> int:
        """The registry server's current time: the stamp it puts on an update of the clock model."""
        from mlflow.exceptions import MlflowException

        name = clock_name(self.name)
        for _ in range(3):
            try:
                return int(self.client.update_registered_model(name, description=f"clock read by {self.owner}")
                           .last_updated_timestamp)
            except MlflowException as exc:
                if "RESOURCE_DOES_NOT_EXIST" not in _error_code(exc):
                    raise
                try:
                    self.client.create_registered_model(
                        name, description=f"Clock of the registry lock of {self.name}: read by updating it.")
                except MlflowException as create_exc:
                    if _error_code(create_exc) not in _CONTENTION_CODES:
                        raise
        raise LockTimeoutError(explain(f"Cannot read the registry clock of {self.name}",
                                       expected=f"registered model {name}", received="none after 3 tries"))

    def _expired(self, generation: int, model: RegisteredModel) -> bool:
        tags = model.tags or {}
        ttl = float(tags.get(LOCK_TTL_TAG) or self.ttl_s)
        key = (generation, tags.get(LOCK_TOKEN_TAG, ""), int(model.last_updated_timestamp or 0))
        guess = self._expiry_guess.get(key)
        if guess is not None and time.monotonic() < guess:
            return False  # seen recently enough that it cannot have expired: no clock read needed
        now_ms = self.server_now_ms()
        if is_expired(key[2], now_ms, ttl):
            return True
        self._expiry_guess = {key: time.monotonic() + ttl - (now_ms - key[2]) / 1000.0}
        return False

    @staticmethod
    def _describe(model: RegisteredModel) -> str:
        tags = model.tags or {}
        return f"{tags.get(LOCK_OWNER_TAG, '?')} ({model.name})"

    # ---- taking and giving back ----------------------------------------------------------------------------
    def acquire(self) -> RegistryLock:
        from mlflow.exceptions import MlflowException

        started = time.monotonic()
        deadline = started + self.wait_s
        next_report = started + min(10.0, self.wait_s / 4)
        delay = 0.05
        holder: RegisteredModel | None = None
        last_error: BaseException | None = None
        while True:
            target: int | None = None
            try:
                newest = self._newest()
                if newest is None:
                    target = 1
                else:
                    generation, model = newest
                    tags = model.tags or {}
                    if tags.get(LOCK_TOKEN_TAG) == self.token and not tags.get(LOCK_RELEASED_TAG):
                        self._held(generation, started)  # our create went through though its answer was an error
                        return self
                    if tags.get(LOCK_RELEASED_TAG):
                        target = generation + 1
                    elif self._expired(generation, model):
                        log.warning("Registry lock of %s held by %s expired on the server's clock (ttl %ss); "
                                    "taking it over", self.name, self._describe(model),
                                    tags.get(LOCK_TTL_TAG, self.ttl_s))
                        target = generation + 1
                    else:
                        holder = model
            except MlflowException as exc:
                # A generation deleted between listing and reading, a busy store: contention, waited out.
                if _error_code(exc) not in _CONTENTION_CODES or time.monotonic() > deadline:
                    raise
                last_error = exc
            if target is not None:
                try:
                    self.client.create_registered_model(
                        generation_name(self.name, target),
                        tags={LOCK_OWNER_TAG: self.owner, LOCK_TOKEN_TAG: self.token,
                              LOCK_TTL_TAG: repr(self.ttl_s)},
                        description=f"Lock over the aliases of {self.name}, held by {self.owner}.",
                    )
                    self._held(target, started)
                    return self
                except MlflowException as exc:
                    if _error_code(exc) not in _CONTENTION_CODES:
                        raise
                    last_error = exc
                    # Lost the race for this generation (or the answer was lost): look again at once.
                    time.sleep(random.uniform(0, 0.05))
                    continue
            now = time.monotonic()
            if now > deadline:
                who = self._describe(holder) if holder is not None else "another contender"
                raise LockTimeoutError(
                    explain(f"Registry lock of {self.name} is held by {who}",
                            expected=f"the lock to be free within {self.wait_s:.0f}s",
                            received=f"still held after {now - started:.0f}s",
                            hint=f"a holder that died frees the lock {self.ttl_s:.0f}s after its last renewal; "
                            "retry the task, or look at the holder's task.")
                ) from last_error
            if now >= next_report and holder is not None:
                log.info("Waiting %.0fs so far for the registry lock of %s, held by %s", now - started, self.name,
                         self._describe(holder))
                next_report = now + 10.0
            time.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self.poll_s)

    def _held(self, generation: int, started: float) -> None:
        from mlflow.exceptions import MlflowException

        self.generation = generation
        self.acquired_after_s = time.monotonic() - started
        self._lost = None
        log.info("Registry lock of %s taken by %s (generation %d) after %.2fs", self.name, self.owner, generation,
                 self.acquired_after_s)
        # Older generations are dead: the newest one is never deleted, so numbers are never reused.
        for old, model in sorted(self._generations().items()):
            if old < generation:
                try:
                    self.client.delete_registered_model(model.name)
                except MlflowException:
                    pass  # another holder cleans it next time
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"registry-lock-{self.name}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        last_ok = time.monotonic()
        every = max(self.ttl_s / 3.0, 0.2)
        while not self._stop.wait(every):
            try:
                self._check()
                self.client.update_registered_model(generation_name(self.name, self.generation or 0),
                                                    description=f"Held by {self.owner}; renewed.")
                last_ok = time.monotonic()
            except LockLostError:
                return
            except Exception as exc:  # noqa: BLE001 - the registry may be briefly away; judged by ttl below
                log.warning("Could not renew the registry lock of %s: %s", self.name, exc)
                if time.monotonic() - last_ok > self.ttl_s:
                    self._lost = f"not renewed for {self.ttl_s:.0f}s ({exc})"
                    return

    def _check(self) -> None:
        if self._lost:
            raise LockLostError(self._lost_message())
        newest = self._newest()
        if newest is None or newest[0] != self.generation or (newest[1].tags or {}).get(LOCK_TOKEN_TAG) != self.token:
            who = self._describe(newest[1]) if newest else "nobody"
            self._lost = f"generation {self.generation} was taken over; the lock is now held by {who}"
            raise LockLostError(self._lost_message())

    def _lost_message(self) -> str:
        return explain(f"The registry lock of {self.name} was lost while {self.owner} held it",
                       expected=f"renewals at least every {self.ttl_s:.0f}s", received=self._lost,
                       hint="the holder was paused or cut off from the registry past the lock's ttl; what it "
                       "decided under the lock must be decided again (retry the task).")

    def ensure_held(self) -> None:
        """Raise :class:`LockLostError` unless this holder's generation is still the newest one."""
        if self.generation is None:
            raise LockLostError(explain(f"The registry lock of {self.name} is not held", expected="acquire() first",
                                        received=None))
        self._check()

    @property
    def lost(self) -> str | None:
        return self._lost

    def release(self) -> None:
        """Stop renewing and mark this holder's own generation released; raise if the lock was lost meanwhile."""
        from mlflow.exceptions import MlflowException

        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
        try:
            self._check()
        except LockLostError:
            self.generation = None
            raise
        except Exception as exc:  # noqa: BLE001
            log.warning("Could not check the registry lock of %s before releasing it: %s", self.name, exc)
        try:
            self.client.set_registered_model_tag(generation_name(self.name, self.generation or 0),
                                                 LOCK_RELEASED_TAG, "true")
        except MlflowException as exc:
            log.warning("Could not release the registry lock of %s; it expires %.0fs after its last renewal: %s",
                        self.name, self.ttl_s, exc)
        self.generation = None

    def __enter__(self) -> RegistryLock:
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.release()
        except LockLostError:
            if exc is None:
                raise
            log.error("The registry lock of %s was lost while the block failed: %s", self.name, self._lost)

