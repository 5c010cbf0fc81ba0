"""Atomic commit, manifest checksums, corruption detection, retention and load_model on local disk."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from airflow_mlops.checkpoints import CheckpointManager, load_model, read_manifest
from airflow_mlops.checkpoints.manager import BackgroundSaver, verify_files
from airflow_mlops.checkpoints.manifest import MANIFEST_NAME, parse_step_dirname, step_dirname
from airflow_mlops.checkpoints.state import MODEL_FILE, capture_rng, restore_rng
from airflow_mlops.exceptions import CheckpointCorruptError, CheckpointError
from airflow_mlops.training.config import CheckpointPolicy
from airflow_mlops.training.models import tabular_mlp

SPEC = {"factory": "airflow_mlops.training.models:tabular_mlp", "kwargs": {"in_features": 3, "hidden_sizes": [4]}}


def save(manager, step, metrics=None, model=None):
    torch.manual_seed(step)
    model = model or tabular_mlp(3, hidden_sizes=[4])
    staged = manager.stage(step)
    staged.save_torch(MODEL_FILE, model.state_dict())
    staged.save_bytes("notes/extra.json", b"{}")
    return manager.commit(staged, epoch=step // 10, metrics=metrics or {"val_loss": 1.0 / step},
                          meta={"layout": "full", "model_spec": SPEC})


def test_step_names_are_strict():
    assert step_dirname(42) == "step-0000000042"
    assert parse_step_dirname("step-0000000042") == 42
    for name in ("step-42", "step-00000000420", ".tmp-step-0000000042-ab", "step-000000004x"):
        assert parse_step_dirname(name) is None


def test_commit_is_atomic_and_manifest_lists_checksums(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    staged = manager.stage(7)
    staged.save_torch(MODEL_FILE, {"w": torch.ones(2)})
    # Staged but not committed: nobody sees it.
    assert manager.committed() == [] and manager.latest() is None
    assert os.path.basename(staged.dir).startswith(".tmp-")
    info = manager.commit(staged, epoch=1, metrics={"val_loss": 0.5, "bad": float("nan")}, meta={"layout": "full"})
    assert info.uri == str(tmp_path / "step-0000000007")
    assert not os.path.exists(staged.dir)
    manifest = json.loads((tmp_path / "step-0000000007" / MANIFEST_NAME).read_text())
    assert manifest["step"] == 7 and manifest["epoch"] == 1
    assert manifest["metrics"] == {"val_loss": 0.5, "bad": None}
    entry = manifest["files"][MODEL_FILE]
    assert entry["size"] == os.path.getsize(tmp_path / "step-0000000007" / MODEL_FILE)
    assert len(entry["sha256_pieces"]) == 64 and entry["piece_size"] == 4 * 1024 * 1024
    assert manifest["layout"] == "full" and "created_at" in manifest
    assert [i.step for i in manager.committed()] == [7]
    assert read_manifest(info.uri)["step"] == 7


def test_folder_without_manifest_is_not_a_checkpoint_and_is_cleaned(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    save(manager, 1)
    # An interrupted write: a temporary folder and a step folder whose manifest never came.
    (tmp_path / ".tmp-step-0000000002-abcd").mkdir()
    (tmp_path / "step-0000000003").mkdir()
    (tmp_path / "step-0000000003" / MODEL_FILE).write_bytes(b"partial")
    (tmp_path / "unrelated").mkdir()
    assert [i.step for i in manager.committed()] == [1]
    assert manager.latest().step == 1
    with pytest.raises(CheckpointError, match="No committed checkpoint"):
        read_manifest(str(tmp_path / "step-0000000003"))
    removed = manager.cleanup_incomplete()
    assert len(removed) == 2
    assert sorted(os.listdir(tmp_path)) == ["step-0000000001", "unrelated"]


def test_flipped_byte_is_detected_and_previous_checkpoint_used(tmp_path, caplog):
    manager = CheckpointManager(str(tmp_path))
    save(manager, 1)
    second = save(manager, 2)
    path = os.path.join(second.uri, MODEL_FILE)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="does not match its manifest"):
        verify_files(second.uri, second.manifest)
    with caplog.at_level(logging.WARNING, logger="airflow_mlops.checkpoints"):
        latest = manager.latest(verify=True)
    assert latest.step == 1
    assert "step-0000000002 is corrupt and is skipped" in caplog.text
    assert manager.latest(verify=False).step == 2
    with pytest.raises(CheckpointCorruptError):
        load_model(second.uri)


def test_missing_file_and_broken_manifest(tmp_path, caplog):
    manager = CheckpointManager(str(tmp_path))
    first = save(manager, 1)
    second = save(manager, 2)
    os.unlink(os.path.join(first.uri, "notes", "extra.json"))
    with pytest.raises(CheckpointCorruptError, match="missing"):
        manager.verify(first)
    (tmp_path / "step-0000000002" / MANIFEST_NAME).write_text("{not json")
    with caplog.at_level(logging.WARNING):
        # The broken manifest hides step 2; step 1 is committed but fails verification.
        assert [i.step for i in manager.committed()] == [1]
        assert manager.latest() is None
    assert "Skipping checkpoint" in caplog.text and second.step == 2


def test_recommit_of_an_existing_step_replaces_it(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    save(manager, 5, metrics={"val_loss": 9.0})
    save(manager, 5, metrics={"val_loss": 1.0})
    assert [i.metrics["val_loss"] for i in manager.committed()] == [1.0]
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []


def test_retention_keeps_last_best_and_protected(tmp_path):
    policy = CheckpointPolicy(every_n_steps=1, keep_last=2, keep_best=1, monitor="val_loss", mode="min")
    manager = CheckpointManager(str(tmp_path), policy)
    losses = {1: 0.9, 2: 0.1, 3: 0.5, 4: 0.6, 5: 0.7, 6: 0.8}
    for step, loss in losses.items():
        save(manager, step, metrics={"val_loss": loss})
        manager.apply_retention(protected=[manager.uri_for(3)])
    assert [i.step for i in manager.committed()] == [2, 3, 5, 6]
    assert manager.best().step == 2


def test_failed_purge_is_logged_not_raised(tmp_path, caplog, monkeypatch):
    manager = CheckpointManager(str(tmp_path), CheckpointPolicy(keep_last=2, keep_best=0))
    for step in (1, 2, 3):
        save(manager, step)

    def boom(uri):
        raise PermissionError("read-only")

    monkeypatch.setattr(manager, "_delete_checkpoint", boom)
    with caplog.at_level(logging.WARNING):
        assert manager.apply_retention() == []
    assert "Could not delete checkpoint" in caplog.text
    assert len(manager.committed()) == 3


def test_load_model_rebuilds_from_spec(tmp_path):
    manager = CheckpointManager(str(tmp_path))
    torch.manual_seed(3)
    model = tabular_mlp(3, hidden_sizes=[4])
    info = save(manager, 3, model=model)
    loaded, manifest = load_model(info.uri)
    assert manifest["step"] == 3
    assert not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_rng_state_round_trip_under_weights_only(tmp_path):
    import random

    import numpy as np

    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)
    state = capture_rng()
    torch.save(state, tmp_path / "rng.pt")
    expected = (torch.rand(3), random.random(), np.random.rand())
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert random.random() == expected[1]
    assert np.random.rand() == expected[2]


def test_background_saver_reports_errors():
    saver = BackgroundSaver()
    saver.submit(lambda: 41 + 1)
    assert saver.wait() == 42
    saver.submit(lambda: 1 / 0)
    with pytest.raises(CheckpointError, match="Background checkpoint save failed"):
        saver.wait()


def pieces_digest(data: bytes, piece: int = 4 * 1024 * 1024) -> str:
    """The manifest's digest, computed independently: sha256 over the sha256 digests of the 4 MiB pieces."""
    import hashlib

    digests = [hashlib.sha256(data[i:i + piece]).digest() for i in range(0, max(len(data), 1), piece)]
    return hashlib.sha256(b"".join(digests)).hexdigest()


def test_manifest_digest_is_that_of_the_file_as_written(tmp_path):
    # Large tensors are hashed piece by piece on a pool while they are written; the entry must still be the
    # digest of the file's bytes, in order.
    manager = CheckpointManager(str(tmp_path))
    state = {f"w{i}": torch.randn(1_500_000 + 17 * i) for i in range(4)}  # writes across piece boundaries
    staged = manager.stage(1)
    staged.save_torch(MODEL_FILE, state)
    staged.save_bytes("empty.bin", b"")
    info = manager.commit(staged, epoch=0)
    path = os.path.join(info.uri, MODEL_FILE)
    data = open(path, "rb").read()
    assert len(data) > 3 * 4 * 1024 * 1024
    assert info.manifest["files"][MODEL_FILE] == {"sha256_pieces": pieces_digest(data), "piece_size": 4 * 1024 * 1024,
                                                  "size": len(data)}
    assert info.manifest["files"]["empty.bin"]["sha256_pieces"] == pieces_digest(b"")
    loaded = torch.load(path, weights_only=True)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_piece_digest_does_not_depend_on_how_the_bytes_arrive(seed):
    import random

    from airflow_mlops.checkpoints import digest

    rng = random.Random(seed)
    data = rng.randbytes(3 * digest.PIECE_SIZE + 12345)
    hasher = digest.PieceHasher()
    pos = 0
    while pos < len(data):
        size = rng.choice([1, 100, 5000, digest.PARALLEL_MIN, digest.PIECE_SIZE - 3, 2 * digest.PIECE_SIZE + 7])
        part = data[pos:pos + size]
        if len(part) >= digest.PARALLEL_MIN:
            hasher.update_while(part, lambda: None)
        else:
            hasher.update(part)
        pos += len(part)
    assert hasher.size == len(data) and hasher.hexdigest() == pieces_digest(data)
    assert digest.of_bytes(data)["sha256_pieces"] == pieces_digest(data)


def test_first_format_manifests_with_plain_sha256_still_verify(tmp_path):
    import hashlib

    manager = CheckpointManager(str(tmp_path))
    info = save(manager, 1)
    manifest = dict(info.manifest, format="airflow-mlops-checkpoint/1")
    for rel in manifest["files"]:
        data = open(os.path.join(info.uri, *rel.split("/")), "rb").read()
        manifest["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    (tmp_path / "step-0000000001" / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert manager.verify(manager.latest(verify=False)).step == 1
    path = os.path.join(info.uri, MODEL_FILE)
    data = bytearray(open(path, "rb").read())
    data[10] ^= 0x80
    open(path, "wb").write(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="sha256 "):
        manager.verify(manager.latest(verify=False))


def test_checkpoint_files_skip_the_zip_crc_and_leave_the_setting_alone(tmp_path):
    import zipfile

    ser = torch.serialization
    manager = CheckpointManager(str(tmp_path))
    staged = manager.stage(1)
    staged.save_torch(MODEL_FILE, {"w": torch.arange(1000.0)})
    info = manager.commit(staged, epoch=0)
    assert ser.get_crc32_options() is True  # the process-wide option is restored after the save
    with zipfile.ZipFile(os.path.join(info.uri, MODEL_FILE)) as archive:
        assert archive.testzip() is not None  # no CRC written: the manifest's sha256 guards the bytes instead
    manager.verify(info)
    assert torch.equal(torch.load(os.path.join(info.uri, MODEL_FILE), weights_only=True)["w"], torch.arange(1000.0))


def test_commit_publishes_then_flushes_in_the_background(tmp_path, monkeypatch):
    from airflow_mlops.checkpoints import manifest as mf

    flushed, calls = [], []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    real_tree = mf.fsync_tree
    monkeypatch.setattr(mf, "fsync_tree", lambda path: (real_tree(path), flushed.append(path))[0])

    manager = CheckpointManager(str(tmp_path))
    info = save(manager, 1)
    manager.wait_durable()
    assert flushed == [info.uri] and manager.is_durable(info.uri)
    assert len(calls) >= 4  # two files, the manifest, the folders

    calls.clear()
    eager = CheckpointManager(str(tmp_path / "eager"), CheckpointPolicy(keep_best=0, fsync_before_commit=True))
    staged = eager.stage(1)
    staged.save_torch(MODEL_FILE, {"w": torch.ones(3)})
    assert len(calls) == 1  # synced as it was written, before any commit
    info = eager.commit(staged, epoch=0)
    assert eager.is_durable(info.uri) and flushed == [manager.uri_for(1)]


def test_retention_waits_until_the_previous_checkpoint_is_on_the_device(tmp_path, monkeypatch):
    # A power loss right after a commit may tear the newest checkpoint; the one before it must be on the
    # device before retention deletes anything older.
    import threading

    from airflow_mlops.checkpoints import manifest as mf

    gate = threading.Event()
    real_tree = mf.fsync_tree

    def slow_for_step_2(path):
        if path.endswith("step-0000000002"):
            assert gate.wait(30)
        real_tree(path)

    monkeypatch.setattr(mf, "fsync_tree", slow_for_step_2)
    manager = CheckpointManager(str(tmp_path), CheckpointPolicy(keep_last=2, keep_best=0))
    save(manager, 1)
    save(manager, 2)
    save(manager, 3)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (manager.apply_retention(), done.set()))
    worker.start()
    assert not done.wait(0.5)
    assert [i.step for i in manager.committed()] == [1, 2, 3]  # step 2 not flushed yet: step 1 stays
    gate.set()
    worker.join(30)
    assert done.is_set() and [i.step for i in manager.committed()] == [2, 3]
    assert manager.is_durable(manager.uri_for(2))


def test_failed_flush_is_raised_with_what_to_do(tmp_path, monkeypatch):
    import errno

    from airflow_mlops.checkpoints import manifest as mf

    def broken_disk(path):
        raise OSError(errno.EIO, "Input/output error", path)

    monkeypatch.setattr(mf, "fsync_tree", broken_disk)
    manager = CheckpointManager(str(tmp_path))
    info = save(manager, 1)
    with pytest.raises(CheckpointError, match="could not be flushed to the device") as excinfo:
        manager.wait_durable()
    assert "check the disk" in str(excinfo.value) and not manager.is_durable(info.uri)


def test_checkpoints_of_an_earlier_process_are_flushed_before_retention_deletes(tmp_path, monkeypatch):
    from airflow_mlops.checkpoints import manifest as mf

    earlier = CheckpointManager(str(tmp_path), CheckpointPolicy(keep_last=2, keep_best=0))
    for step in (1, 2):
        save(earlier, step)
    earlier.wait_durable()
    flushed = []
    real_tree = mf.fsync_tree
    monkeypatch.setattr(mf, "fsync_tree", lambda path: (flushed.append(path), real_tree(path))[1])
    later = CheckpointManager(str(tmp_path), CheckpointPolicy(keep_last=2, keep_best=0))
    save(later, 3)
    later.apply_retention()
    # Step 2 came from the earlier manager: it is flushed now, before step 1 goes.
    assert later.uri_for(2) in flushed and later.is_durable(later.uri_for(2))
    assert [i.step for i in later.committed()] == [2, 3]


def test_digests_work_in_a_forked_child(tmp_path):
    # The hashing pool's threads do not survive fork (DataLoader workers): a child builds its own.
    import multiprocessing

    from airflow_mlops.checkpoints import digest

    data = os.urandom(2 * digest.PIECE_SIZE + 5)
    expected = digest.of_bytes(data)  # the pool exists in this process now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        assert pool.apply(digest.of_bytes, (data,)) == expected
