"""Temporary folders of tries: the next try removes those whose owner process is gone, and only those."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from airflow_mlops.training.launcher import clean_stale_try_dirs, make_try_dir, try_tempdir


def _owned_by(path: str, **owner) -> None:
    with open(os.path.join(path, ".owner.json"), "w", encoding="utf-8") as fh:
        json.dump(owner, fh)


def test_only_folders_of_dead_owners_on_this_host_are_removed(tmp_path):
    mine = make_try_dir(str(tmp_path))
    dead = make_try_dir(str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with open(os.path.join(mine, ".owner.json"), encoding="utf-8") as fh:
        owner = json.load(fh)
    _owned_by(dead, pid=child.pid, start="1", host=owner["host"])
    elsewhere = make_try_dir(str(tmp_path))
    _owned_by(elsewhere, pid=child.pid, start="1", host="another-container")
    unrelated = tmp_path / "something-else"
    unrelated.mkdir()
    assert clean_stale_try_dirs(str(tmp_path)) == [dead]
    assert os.path.isdir(mine) and os.path.isdir(elsewhere) and unrelated.is_dir()


def test_try_tempdir_cleans_before_and_after(tmp_path):
    dead = make_try_dir(str(tmp_path))
    _owned_by(dead, pid=2**22 + 1, start="0", host=socket.gethostname())  # above the largest Linux pid
    with try_tempdir(str(tmp_path)) as path:
        assert os.path.isdir(path) and not os.path.exists(dead)
    assert not os.path.exists(path)
