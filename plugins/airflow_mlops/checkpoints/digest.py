"""
File digests of checkpoint manifests: sha256 of every 4 MiB piece, hashed on several threads, and the sha256
of the pieces' digests (the same construction as S3's composite checksums of multipart uploads).

One sha256 stream runs at one core's speed (about 1.1 to 1.4 GB/s on the machines measured), slower than
``torch.save`` writes to the page cache; pieces let every core hash, while the bytes are being written, so
the digest costs about no time next to the write. Manifests of the first format hold the plain sha256 of
the file instead; both are checked.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, TypeVar

PIECE_SIZE = 4 * 1024 * 1024
PIECES_KEY = "sha256_pieces"  # format 2: sha256 over the 32-byte sha256 digests of the file's pieces
PLAIN_KEY = "sha256"  # format 1: sha256 of the whole file
# Writes at least this large are hashed on the pool while the bytes go to the file (both release the GIL).
PARALLEL_MIN = 1024 * 1024
_READ_BATCH = 8 * PIECE_SIZE

T = TypeVar("T")
_pool_instance: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _pool_instance
    with _pool_lock:
        if _pool_instance is None:
            workers = max(1, min(8, os.cpu_count() or 1))
            _pool_instance = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="checkpoint-sha256")
        return _pool_instance


def _forget_pool_in_child() -> None:
    # A forked child (a DataLoader worker, say) has the pool object but none of its threads.
    global _pool_instance, _pool_lock
    _pool_instance, _pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _piece_digest(view: memoryview) -> bytes:
    return hashlib.sha256(view).digest()


def _as_bytes_view(data: Any) -> memoryview:
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class PieceHasher:
    """The pieces digest of a byte stream fed in order, large updates hashed piece by piece on a thread pool."""

    def __init__(self, piece_size: int = PIECE_SIZE) -> None:
        self.piece_size = piece_size
        self.size = 0
        self._digests: list[bytes] = []
        self._partial = hashlib.sha256()
        self._partial_len = 0

    def update(self, data: Any) -> None:
        """Hash ``data`` on this thread (small updates)."""
        view = _as_bytes_view(data)
        pos, n = 0, view.nbytes
        while pos < n:
            take = min(self.piece_size - self._partial_len, n - pos)
            self._partial.update(view[pos:pos + take])
            self._partial_len += take
            pos += take
            if self._partial_len == self.piece_size:
                self._close_partial()
        self.size += n

    def update_while(self, data: Any, io: Callable[[], T] | None = None) -> T | None:
        """
        Hash ``data`` on the pool, its whole pieces side by side, while ``io()`` runs on this thread (the write
        of these same bytes, or the read of the next ones); returns ``io()``'s result once both are done.
        ``data`` is only read until this returns. Data under ``PARALLEL_MIN`` is hashed on this thread.
        """
        view = _as_bytes_view(data)
        n, size = view.nbytes, self.piece_size
        if n < PARALLEL_MIN:
            self.update(view)
            return io() if io is not None else None
        pool = _pool()
        plan: list[tuple[str, int, Future[Any], Any]] = []
        pos = 0
        if self._partial_len:
            pos = min(size - self._partial_len, n)
            plan.append(("head", pos, pool.submit(self._partial.update, view[:pos]), None))
        while n - pos >= size:
            plan.append(("piece", size, pool.submit(_piece_digest, view[pos:pos + size]), None))
            pos += size
        if pos < n:
            tail = hashlib.sha256()
            plan.append(("tail", n - pos, pool.submit(tail.update, view[pos:]), tail))
        try:
            result = io() if io is not None else None
        finally:
            wait([future for _kind, _n, future, _extra in plan])
        for kind, length, future, extra in plan:
            value = future.result()
            if kind == "head":
                self._partial_len += length
                if self._partial_len == size:
                    self._close_partial()
            elif kind == "piece":
                self._digests.append(value)
            else:
                self._partial, self._partial_len = extra, length
        self.size += n
        return result

    def _close_partial(self) -> None:
        self._digests.append(self._partial.digest())
        self._partial = hashlib.sha256()
        self._partial_len = 0

    def hexdigest(self) -> str:
        digests = list(self._digests)
        if self._partial_len or not digests:
            digests.append(self._partial.copy().digest())
        return hashlib.sha256(b"".join(digests)).hexdigest()


def entry(hasher: PieceHasher) -> dict[str, Any]:
    """The manifest entry of one file."""
    return {PIECES_KEY: hasher.hexdigest(), "piece_size": hasher.piece_size, "size": hasher.size}


def of_bytes(data: Any, piece_size: int = PIECE_SIZE) -> dict[str, Any]:
    hasher = PieceHasher(piece_size)
    hasher.update_while(data)
    return entry(hasher)


def of_file(path: str, piece_size: int = PIECE_SIZE) -> dict[str, Any]:
    """Read ``path`` once; the next batch is read while the current one is hashed."""
    hasher = PieceHasher(piece_size)
    with open(path, "rb") as fh:
        batch = fh.read(_READ_BATCH)
        while batch:
            batch = hasher.update_while(batch, lambda: fh.read(_READ_BATCH))
    return entry(hasher)


def matching(expected: dict[str, Any], *, path: str | None = None, data: Any = None) -> dict[str, Any]:
    """The entry of a file (``path``) or of bytes (``data``) computed the way ``expected`` was."""
    if PIECES_KEY in expected:
        piece_size = int(expected.get("piece_size") or PIECE_SIZE)
        return of_file(path, piece_size) if path is not None else of_bytes(data, piece_size)
    plain = hashlib.sha256()
    size = 0
    if path is not None:
        with open(path, "rb") as fh:
            while chunk := fh.read(PIECE_SIZE):
                plain.update(chunk)
                size += len(chunk)
    else:
        plain.update(data)
        size = memoryview(data).nbytes
    return {PLAIN_KEY: plain.hexdigest(), "size": size}


def describe(entry_: dict[str, Any]) -> str:
    key = PIECES_KEY if PIECES_KEY in entry_ else PLAIN_KEY
    return f"{key} {entry_.get(key)} and {entry_.get('size')} bytes"


def same(expected: dict[str, Any], actual: dict[str, Any]) -> bool:
    key = PIECES_KEY if PIECES_KEY in expected else PLAIN_KEY
    return actual.get(key) == expected.get(key) and actual.get("size") == expected.get("size")
