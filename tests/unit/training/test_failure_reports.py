"""The failing rank's own error: root-cause lines and torchrun's per-rank error files."""

from __future__ import annotations

import errno
import json
import os

from airflow_mlops.exceptions import CheckpointError, StorageError
from airflow_mlops.training.launcher import first_failure
from airflow_mlops.training.worker import root_cause_line


def _chain() -> BaseException:
    try:
        try:
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/ckpt/model.pt")
            except OSError as exc:
                raise StorageError("S3 upload failed for s3://b/ckpt/model.pt") from exc
        except StorageError as exc:
            raise CheckpointError("Background checkpoint save failed") from exc
    except CheckpointError as exc:
        return exc


def test_root_cause_line_names_the_first_error_and_the_package_error_that_reported_it():
    line = root_cause_line(_chain())
    assert line.startswith("OSError: [Errno 28] No space left on device: '/ckpt/model.pt'")
    assert "(reported as StorageError: S3 upload failed for s3://b/ckpt/model.pt)" in line


def test_root_cause_line_of_a_plain_error():
    assert root_cause_line(KeyError("missing_column")) == "KeyError: 'missing_column'"


def _error_file(root, local_rank: int, message, **extra) -> None:
    folder = root / "run_abc" / "attempt_0" / str(local_rank)
    folder.mkdir(parents=True)
    (folder / "error.json").write_text(json.dumps({"message": message, **extra}))


def test_first_failure_is_the_earliest_rank_not_the_one_that_saw_a_closed_connection(tmp_path):
    _error_file(tmp_path, 0, {"message": "OSError: ...", "extraInfo": {"time": 100.25, "rank": 0,
                                                                       "root_cause": "OSError: [Errno 28] full"}})
    _error_file(tmp_path, 1, {"message": "DistBackendError: Connection closed by peer",
                              "extraInfo": {"time": 100.75, "rank": 1}})
    assert first_failure(str(tmp_path)) == (0, "OSError: [Errno 28] full")


def test_first_failure_reads_torchruns_own_format_and_maps_local_ranks(tmp_path):
    _error_file(tmp_path, 1, {"message": "ValueError: bad\nmore", "extraInfo": {"timestamp": "50"}})
    assert first_failure(str(tmp_path), base_rank=4) == (5, "ValueError: bad")
    assert first_failure(str(tmp_path / "none")) is None
