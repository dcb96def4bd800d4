"""Atomic writes: whole files or none, with the permissions of any new file."""

import os
import stat

from bats_tf.io_utils import atomic_write_json, atomic_write_text


def test_written_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(str(tmp_path / "a.txt"), "x")
        os.umask(0o077)
        atomic_write_json(str(tmp_path / "b.json"), {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode) == 0o600


def test_a_rewrite_leaves_no_temporary_file(tmp_path):
    path = str(tmp_path / "c.txt")
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert open(path).read() == "second"
    assert os.listdir(tmp_path) == ["c.txt"]
