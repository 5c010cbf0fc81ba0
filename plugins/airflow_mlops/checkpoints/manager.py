"""Checkpoint manager: stage, commit atomically, list committed, verify, pick latest/best, apply retention."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from airflow_mlops.checkpoints import digest
from airflow_mlops.checkpoints import manifest as mf
from airflow_mlops.checkpoints.policy import CheckpointPolicy
from airflow_mlops.checkpoints.retention import CheckpointRecord, best_record, plan_retention
from airflow_mlops.exceptions import (
    CheckpointCorruptError,
    CheckpointError,
    CheckpointFencedError,
    StorageError,
    explain,
)
from airflow_mlops.hooks.storage import LocalStorage, Storage, get_storage, is_s3, join, local_path

log = logging.getLogger("airflow_mlops.checkpoints")

#: The run's lease on its checkpoint folder: the try that wrote it last is the only one that may commit there.
LEASE_FILE = "lease.json"
LEASE_ENV = "MLOPS_CHECKPOINT_LEASE"


def lease_uri(root_uri: str) -> str:
    return join(root_uri.rstrip("/") if is_s3(root_uri) else local_path(root_uri), LEASE_FILE)


def claim_lease(root_uri: str, owner: str, storage: Storage | None = None) -> str:
    """
    Take the checkpoint folder for a new try and return its token: from now on only writers holding this
    token commit or delete there, so processes of an earlier try that still run are fenced out.
    """
    uri = lease_uri(root_uri)
    storage = storage or get_storage(uri)
    token = uuid.uuid4().hex
    lease = {"token": token, "owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    storage.write_bytes(uri, json.dumps(lease, sort_keys=True).encode("utf-8"))
    return token


def read_lease(root_uri: str, storage: Storage | None = None) -> dict[str, Any] | None:
    """The folder's lease, None when there is none; a store that does not answer raises :class:`StorageError`."""
    uri = lease_uri(root_uri)
    storage = storage or get_storage(uri)
    if not storage.exists(uri):
        return None
    try:
        return dict(json.loads(storage.read_bytes(uri)))
    except ValueError:
        return {}


@dataclass(frozen=True)
class CheckpointInfo:
    """A committed checkpoint as readers see it."""

    uri: str
    step: int
    manifest: dict[str, Any] = field(repr=False)

    @property
    def epoch(self) -> int:
        return int(self.manifest.get("epoch", 0))

    @property
    def metrics(self) -> dict[str, float | None]:
        return dict(self.manifest.get("metrics") or {})


_zip_crc_lock = threading.Lock()


@contextmanager
def _without_zip_crc() -> Iterator[None]:
    """
    ``torch.save`` without the zip format's CRC32 of every record: the manifest's sha256 covers every byte
    already, and the CRC pass costs about as much as the write. ``torch.load`` reads such files as usual.
    """
    import torch.serialization as ser

    with _zip_crc_lock:
        previous = ser.get_crc32_options()
        ser.set_crc32_options(False)
        try:
            yield
        finally:
            ser.set_crc32_options(previous)


@dataclass
class StagedCheckpoint:
    """
    A checkpoint being written: a local folder that no reader looks at until :meth:`CheckpointManager.commit`.

    :param sync: flush each file to the device as it is written (``fsync_before_commit``); otherwise the
        manager flushes the committed folder in the background.
    """

    step: int
    dir: str
    digests: dict[str, dict[str, Any]] = field(default_factory=dict)
    sync: bool = False

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def save_torch(self, name: str, obj: Any) -> None:
        """``torch.save`` into the stage, hashing the bytes as they are written (the file is never read back)."""
        import torch

        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            writer = mf.HashingWriter(fh)
            with _without_zip_crc():
                torch.save(obj, writer)
            self._finish(fh)
        self.digests[name] = writer.entry()

    def save_bytes(self, name: str, data: bytes) -> None:
        self.write_unlisted(name, data)
        self.digests[name] = digest.of_bytes(data)

    def write_unlisted(self, name: str, data: bytes) -> None:
        """Write a file the manifest does not list (the manifest itself)."""
        path = self.path(name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
            self._finish(fh)

    def _finish(self, fh: Any) -> None:
        fh.flush()
        if self.sync:
            os.fsync(fh.fileno())


class CheckpointManager:
    """
    Checkpoints of one run under ``root_uri`` (local folder or s3:// prefix), one folder per checkpoint.

    A checkpoint exists for readers once its folder ``step-XXXXXXXXXX`` holds ``manifest.json``: on disk the
    folder is written under a temporary name and renamed; on S3 the files go up first and the manifest last.

    On disk a committed folder is flushed to the device on a background thread (or before the rename with
    ``policy.fsync_before_commit``). Retention deletes nothing until every kept checkpoint but the newest is
    flushed, so a power loss right after a commit still leaves the previous checkpoint on the device.

    :param root_uri: the run's checkpoint folder.
    :param policy: frequency and retention; only retention and ``monitor`` are used here.
    :param storage: the store; picked from the URI when omitted.
    :param lease_token: this try's token on the folder (default: environment ``MLOPS_CHECKPOINT_LEASE``); when
        set, commits and deletes first check that the folder's lease still carries it, and raise
        :class:`CheckpointFencedError` once a newer try took the folder over.
    """

    def __init__(self, root_uri: str, policy: CheckpointPolicy | None = None, storage: Storage | None = None,
                 lease_token: str | None = None) -> None:
        self.root_uri = root_uri.rstrip("/") if is_s3(root_uri) else local_path(root_uri)
        self.policy = policy or CheckpointPolicy(keep_best=0)
        self.storage = storage or get_storage(self.root_uri)
        self.lease_token = lease_token if lease_token is not None else (os.environ.get(LEASE_ENV) or None)
        self.local = isinstance(self.storage, LocalStorage)
        self._flush_pool: ThreadPoolExecutor | None = None
        self._flushes: dict[str, Future[None]] = {}  # uri -> background flush of its current files
        self._durable: set[str] = set()  # uris known to be on the device

    # ---- fencing ------------------------------------------------------------------------------------------
    def check_lease(self) -> None:
        """Raise :class:`CheckpointFencedError` when a newer try holds the folder's lease."""
        if not self.lease_token:
            return
        lease = read_lease(self.root_uri, self.storage)
        if lease is None or lease.get("token") != self.lease_token:
            raise CheckpointFencedError(
                explain(f"A newer try owns the checkpoint folder {self.root_uri}",
                        expected=f"lease token {self.lease_token}",
                        received=None if lease is None else {k: lease.get(k) for k in ("token", "owner", "host", "pid")},
                        hint="this process belongs to an earlier try that was given up; it stops without writing.")
            )

    # ---- naming -------------------------------------------------------------------------------------------
    def uri_for(self, step: int) -> str:
        return join(self.root_uri, mf.step_dirname(step))

    # ---- writing ------------------------------------------------------------------------------------------
    def stage(self, step: int) -> StagedCheckpoint:
        """A fresh staging folder: inside the root on disk (so the commit is a rename), a temp folder for S3."""
        mf.step_dirname(step)  # validates the range before anything is written
        if self.local:
            os.makedirs(self.root_uri, exist_ok=True)
            path = os.path.join(self.root_uri, f"{mf.TMP_PREFIX}{mf.step_dirname(step)}-{uuid.uuid4().hex[:8]}")
            os.makedirs(path)
        else:
            path = tempfile.mkdtemp(prefix=f"ckpt-{mf.step_dirname(step)}-")
        return StagedCheckpoint(step=step, dir=path, sync=self.local and self.policy.fsync_before_commit)

    def discard(self, staged: StagedCheckpoint) -> None:
        shutil.rmtree(staged.dir, ignore_errors=True)

    def commit(
        self,
        staged: StagedCheckpoint,
        *,
        epoch: int,
        metrics: dict[str, float] | None = None,
        meta: dict[str, Any] | None = None,
    ) -> CheckpointInfo:
        """Digest every staged file, write the manifest last and publish the checkpoint in one step."""
        on_disk: dict[str, str] = {}
        for dirpath, _dirs, names in os.walk(staged.dir):
            for name in names:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, staged.dir).replace(os.sep, "/")
                if rel != mf.MANIFEST_NAME:
                    on_disk[rel] = full
        # Files written by others (sharded checkpoints: every rank's shards) are read back and digested, their
        # pieces on every core.
        for rel in sorted(on_disk):
            if rel not in staged.digests:
                staged.digests[rel] = digest.of_file(on_disk[rel])
        files = {rel: staged.digests[rel] for rel in on_disk}
        manifest = mf.build_manifest(step=staged.step, epoch=epoch, files=files, metrics=metrics, meta=meta)
        data = mf.dumps(manifest)
        final = self.uri_for(staged.step)
        try:
            self.check_lease()
            if self.local:
                self._commit_local(staged, data, final)
            else:
                self._commit_remote(staged, data, final)
        except BaseException:
            self.discard(staged)
            raise
        score = manifest["metrics"].get(self.policy.monitor)
        log.info("Committed checkpoint %s (step %d, epoch %d, %s %s)", final, staged.step, epoch, self.policy.monitor,
                 "n/a" if score is None else f"{score:.6g}")
        return CheckpointInfo(uri=final, step=staged.step, manifest=manifest)

    def _commit_local(self, staged: StagedCheckpoint, manifest_bytes: bytes, final: str) -> None:
        staged.write_unlisted(mf.MANIFEST_NAME, manifest_bytes)
        if staged.sync:
            for dirpath, _dirs, _names in os.walk(staged.dir):
                mf.fsync_dir(dirpath)
        trash = None
        if os.path.exists(final):
            # Saving a step again (its earlier copy was corrupt): move the old one out of the way first.
            trash = os.path.join(self.root_uri, f"{mf.TMP_PREFIX}old-{os.path.basename(final)}-{uuid.uuid4().hex[:8]}")
            os.rename(final, trash)
        self._durable.discard(final)
        os.rename(staged.dir, final)
        if staged.sync:
            mf.fsync_dir(self.root_uri)
            self._durable.add(final)
        else:
            self._flush_in_background(final)
        if trash:
            shutil.rmtree(trash, ignore_errors=True)

    # ---- durability (local disk) ----------------------------------------------------------------------------
    def _flush_in_background(self, uri: str) -> None:
        if self._flush_pool is None:
            self._flush_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-fsync")
        self._flushes[uri] = self._flush_pool.submit(mf.fsync_tree, uri)

    def _wait_flushes(self, uris: Iterable[str]) -> None:
        for uri in list(uris):
            future = self._flushes.get(uri)
            if future is None:
                continue
            try:
                future.result()
            except OSError as exc:
                raise CheckpointError(
                    explain(f"Checkpoint {uri} could not be flushed to the device", expected="fsync to succeed",
                            received=repr(exc), hint="check the disk (space, I/O errors); the run can resume "
                            "from the previous checkpoint.")
                ) from exc
            finally:
                if self._flushes.get(uri) is future:
                    del self._flushes[uri]
            self._durable.add(uri)

    def wait_durable(self) -> None:
        """Block until every checkpoint this manager committed is on the device; raise if a flush failed."""
        self._wait_flushes(list(self._flushes))

    def is_durable(self, uri: str) -> bool:
        """Whether this manager knows the checkpoint to be on the device (flushed by it, or synced on demand)."""
        future = self._flushes.get(uri)
        if future is not None and future.done() and future.exception() is None:
            self._wait_flushes([uri])
        return uri in self._durable

    def make_durable(self, uri: str) -> None:
        """Flush one committed checkpoint to the device now (one written by an earlier process, say)."""
        if not self.local or uri in self._durable:
            return
        if uri in self._flushes:
            self._wait_flushes([uri])
            return
        mf.fsync_tree(uri)
        self._durable.add(uri)

    def _durable_before_delete(self, kept: list[str]) -> None:
        """Before retention deletes: every kept checkpoint but the newest is flushed, at least one of them known."""
        if not self.local or not kept:
            return
        newest, older = kept[-1], kept[:-1]
        self._wait_flushes([u for u in list(self._flushes) if u != newest])
        if older and not any(u in self._durable for u in older):
            self.make_durable(older[-1])

    def _commit_remote(self, staged: StagedCheckpoint, manifest_bytes: bytes, final: str) -> None:
        if self.storage.exists(join(final, mf.MANIFEST_NAME)):
            # Uncommit the old copy first so no reader pairs its manifest with the new files.
            self.storage.delete(join(final, mf.MANIFEST_NAME))
        for rel in sorted(staged.digests):
            self.storage.upload_file(staged.path(rel), join(final, rel))
        self.storage.write_bytes(join(final, mf.MANIFEST_NAME), manifest_bytes)
        shutil.rmtree(staged.dir, ignore_errors=True)

    # ---- reading ------------------------------------------------------------------------------------------
    def _step_folders(self) -> dict[int, tuple[str, bool]]:
        """step -> (uri, has manifest), for folders named by the strict step pattern."""
        out: dict[int, tuple[str, bool]] = {}
        if self.local:
            if not os.path.isdir(self.root_uri):
                return out
            for name in os.listdir(self.root_uri):
                step = mf.parse_step_dirname(name)
                if step is None:
                    continue
                path = os.path.join(self.root_uri, name)
                out[step] = (path, os.path.isfile(os.path.join(path, mf.MANIFEST_NAME)))
            return out
        prefix = self.root_uri + "/"
        for key in self.storage.list(prefix):
            rest = key[len(prefix):]
            folder, _, tail = rest.partition("/")
            step = mf.parse_step_dirname(folder)
            if step is None or not tail:
                continue
            uri, committed = out.get(step, (prefix + folder, False))
            out[step] = (uri, committed or tail == mf.MANIFEST_NAME)
        return out

    def committed(self) -> list[CheckpointInfo]:
        """Every committed checkpoint, oldest first; an unreadable manifest is logged and skipped."""
        infos = []
        for step, (uri, has_manifest) in sorted(self._step_folders().items()):
            if not has_manifest:
                continue
            try:
                infos.append(CheckpointInfo(uri=uri, step=step, manifest=read_manifest(uri, self.storage)))
            except (CheckpointError, StorageError) as exc:
                log.warning("Skipping checkpoint %s: %s", uri, exc)
        return infos

    def verify(self, checkpoint: CheckpointInfo | str) -> CheckpointInfo:
        info = checkpoint if isinstance(checkpoint, CheckpointInfo) else self.info(checkpoint)
        verify_files(info.uri, info.manifest, self.storage)
        return info

    def info(self, uri: str) -> CheckpointInfo:
        manifest = read_manifest(uri, self.storage)
        return CheckpointInfo(uri=uri.rstrip("/"), step=int(manifest["step"]), manifest=manifest)

    def latest(self, verify: bool = True, remove_corrupt: bool = False) -> CheckpointInfo | None:
        """
        The newest committed checkpoint (whose files match their checksums when ``verify``).

        With ``remove_corrupt`` the corrupt ones newer than the returned checkpoint are deleted: a run resuming
        from an older step writes those steps again.
        """
        for info in reversed(self.committed()):
            if not verify:
                return info
            try:
                return self.verify(info)
            except (CheckpointCorruptError, StorageError) as exc:
                log.warning("Checkpoint %s is corrupt and is skipped; trying the previous one. %s", info.uri, exc)
                if remove_corrupt:
                    try:
                        self._delete_checkpoint(info.uri)
                        log.warning("Removed the corrupt checkpoint %s", info.uri)
                    except Exception as del_exc:  # noqa: BLE001
                        log.warning("Could not remove the corrupt checkpoint %s: %s", info.uri, del_exc)
        return None

    def best(self) -> CheckpointInfo | None:
        """The best committed checkpoint by the policy's monitored metric, or None without scores."""
        infos = self.committed()
        records = [CheckpointRecord(i.uri, i.step, i.metrics.get(self.policy.monitor)) for i in infos]
        best = best_record(records, self.policy.mode)
        return next((i for i in infos if best and i.uri == best.uri), None)

    # ---- housekeeping -------------------------------------------------------------------------------------
    def apply_retention(self, protected: Iterable[str] = ()) -> list[str]:
        """
        Delete what the policy does not keep. Retention never fails training: a failed listing or delete is
        logged and retried after the next commit. Only a fenced (stale) writer raises.
        """
        try:
            self.check_lease()
            return self._apply_retention(protected)
        except CheckpointFencedError:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed purge must not fail training
            log.warning("Retention skipped in %s, retried after the next checkpoint: %s", self.root_uri, exc)
            return []

    def _apply_retention(self, protected: Iterable[str]) -> list[str]:
        infos = self.committed()
        records = [CheckpointRecord(i.uri, i.step, i.metrics.get(self.policy.monitor)) for i in infos]
        plan = plan_retention(records, keep_last=self.policy.keep_last, keep_best=self.policy.keep_best,
                              mode=self.policy.mode, protected=protected)
        if plan.delete:
            doomed = set(plan.delete)
            self._durable_before_delete([r.uri for r in records if r.uri not in doomed])
        deleted = []
        for uri in plan.delete:
            try:
                self._delete_checkpoint(uri)
                deleted.append(uri)
            except CheckpointFencedError:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed purge must not fail training
                log.warning("Could not delete checkpoint %s (kept for now): %s", uri, exc)
        if deleted:
            log.info("Retention deleted %d checkpoint(s): %s", len(deleted), ", ".join(deleted))
        return deleted

    def _delete_checkpoint(self, uri: str) -> None:
        self.check_lease()
        if self.local:
            # Uncommit first (the manifest goes), so a half-deleted folder never looks committed.
            manifest_path = os.path.join(uri, mf.MANIFEST_NAME)
            if os.path.exists(manifest_path):
                os.unlink(manifest_path)
            shutil.rmtree(uri)
            self._durable.discard(uri)
        else:
            self.storage.delete(join(uri, mf.MANIFEST_NAME))
            self.storage.delete_prefix(uri + "/")

    def cleanup_incomplete(self) -> list[str]:
        """Remove leftovers of interrupted writes: temporary folders, and step folders without a manifest."""
        removed: list[str] = []
        self.check_lease()
        if self.local:
            if not os.path.isdir(self.root_uri):
                return removed
            for name in os.listdir(self.root_uri):
                if name.startswith(mf.TMP_PREFIX):
                    shutil.rmtree(os.path.join(self.root_uri, name), ignore_errors=True)
                    removed.append(name)
        for _step, (uri, has_manifest) in self._step_folders().items():
            if not has_manifest:
                try:
                    self.storage.delete_prefix(uri if self.local else uri + "/")
                    removed.append(uri)
                except Exception as exc:  # noqa: BLE001
                    log.warning("Could not remove the incomplete checkpoint %s: %s", uri, exc)
        if removed:
            log.info("Removed %d incomplete checkpoint write(s) from an interrupted attempt", len(removed))
        return removed


def read_manifest(checkpoint_uri: str, storage: Storage | None = None) -> dict[str, Any]:
    """The manifest of a committed checkpoint; :class:`CheckpointError` when the folder is not committed."""
    storage = storage or get_storage(checkpoint_uri)
    path = join(checkpoint_uri.rstrip("/") if is_s3(checkpoint_uri) else local_path(checkpoint_uri),
                mf.MANIFEST_NAME)
    try:
        data = storage.read_bytes(path)
    except StorageError as exc:
        raise CheckpointError(
            explain("No committed checkpoint at this location", expected=f"{mf.MANIFEST_NAME} in the folder",
                    received=checkpoint_uri, hint="checkpoints whose write was interrupted have no manifest.")
        ) from exc
    return mf.loads(data, checkpoint_uri)


def verify_files(checkpoint_uri: str, manifest: dict[str, Any], storage: Storage | None = None) -> None:
    """Check size and digest of every file the manifest lists; :class:`CheckpointCorruptError` otherwise."""
    storage = storage or get_storage(checkpoint_uri)
    for rel in manifest["files"]:
        mf.check_name(rel, checkpoint_uri)
    for rel, expected in manifest["files"].items():
        path = join(checkpoint_uri, *rel.split("/"))
        try:
            if isinstance(storage, LocalStorage):
                actual = digest.matching(expected, path=path)
            else:
                actual = digest.matching(expected, data=storage.read_bytes(path))
        except (FileNotFoundError, StorageError) as exc:
            raise CheckpointCorruptError(
                explain(f"Checkpoint file {rel} is missing", expected="every file in the manifest",
                        received=checkpoint_uri)
            ) from exc
        mf.check_file(rel, expected, actual, checkpoint_uri)


@contextmanager
def local_copy(checkpoint_uri: str, storage: Storage | None = None, verify: bool = True) -> Iterator[str]:
    """A local folder holding the checkpoint's files (the folder itself on disk, a verified download from S3)."""
    storage = storage or get_storage(checkpoint_uri)
    manifest = read_manifest(checkpoint_uri, storage)
    for rel in manifest["files"]:  # all names checked before anything is downloaded
        mf.check_name(rel, checkpoint_uri)
    if isinstance(storage, LocalStorage):
        path = local_path(checkpoint_uri)
        if verify:
            verify_files(path, manifest, storage)
        yield path
        return
    tmp = tempfile.mkdtemp(prefix="ckpt-read-")
    try:
        for rel, expected in manifest["files"].items():
            dst = os.path.join(tmp, *rel.split("/"))
            real_tmp = os.path.realpath(tmp)
            if os.path.commonpath([real_tmp, os.path.realpath(os.path.dirname(dst))]) != real_tmp:
                raise CheckpointCorruptError(explain(f"Checkpoint file {rel} would land outside its folder",
                                                     expected=f"under {tmp}", received=dst))
            try:
                storage.download_file(join(checkpoint_uri, *rel.split("/")), dst)
            except StorageError as exc:
                raise CheckpointCorruptError(
                    explain(f"Checkpoint file {rel} is missing", expected="every file in the manifest",
                            received=checkpoint_uri)
                ) from exc
            if verify:
                mf.check_file(rel, expected, digest.matching(expected, path=dst), checkpoint_uri)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class BackgroundSaver:
    """One background thread that writes checkpoints while training goes on; one save in flight at a time."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._result: Any = None

    def submit(self, fn: Callable[[], Any]) -> None:
        self.wait()

        def run() -> None:
            try:
                self._result = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the training thread by wait()
                self._error = exc

        self._thread = threading.Thread(target=run, name="checkpoint-save", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> Any:
        """Block until the save in flight is done; raise its error if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            err, self._error = self._error, None
            raise CheckpointError(explain("Background checkpoint save failed", expected="a committed checkpoint",
                                          received=repr(err))) from err
        return self._result
