"""Atomic writes: whole files or none, with the permissions of any new file; failed writes
named by path and errno."""

import errno
import json
import os
import stat

import pytest

from bats_tf.errors import WriteFailed
from bats_tf.io_utils import (
    atomic_write_json,
    atomic_write_text,
    remove_temporaries,
    write_failure,
)


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


def _failing_fsync(code):
    def fsync(fd):
        raise OSError(code, os.strerror(code))

    return fsync


@pytest.mark.parametrize("code, name", [(errno.ENOSPC, "ENOSPC"), (errno.EROFS, "EROFS")])
def test_a_failed_write_keeps_the_old_file_and_names_path_and_errno(
    tmp_path, monkeypatch, code, name
):
    path = str(tmp_path / "history.json")
    atomic_write_json(path, [1])
    monkeypatch.setattr(os, "fsync", _failing_fsync(code))
    with pytest.raises(WriteFailed) as e:
        atomic_write_json(path, [1, 2])
    assert str(e.value).startswith(f"{path}: {os.strerror(code)} ({name}); the last checkpoint")
    assert "rerun the same command to continue" in str(e.value)
    assert json.load(open(path)) == [1]
    assert os.listdir(tmp_path) == ["history.json"]  # no temporary file left


def test_failed_writes_of_tensorflow_are_recognised():
    class ResourceExhaustedError(Exception):  # as TensorFlow words a failed checkpoint write
        __module__ = "tensorflow.python.framework.errors_impl"

    error = ResourceExhaustedError(
        "{{function_node __wrapped__SaveV2_dtypes_3_device_/job:localhost/replica:0/task:0/"
        "device:CPU:0}} /run/checkpoints/ckpt-4_temp/part-00000-of-00001.data-00000-of-00001"
        ".tempstate1; No space left on device [Op:SaveV2]"
    )
    failure = write_failure(error)
    assert failure.errno_name == "ENOSPC"
    assert failure.path.startswith("/run/checkpoints/ckpt-4_temp/part-00000")
    assert write_failure(ResourceExhaustedError("out of memory")) is None
    assert write_failure(ValueError("No space left on device")) is None
    assert write_failure(OSError(errno.EROFS, "Read-only file system", "/x")).path == "/x"


def test_remove_temporaries_leaves_other_files(tmp_path):
    (tmp_path / ".tmp-abc").write_text("cut short")
    (tmp_path / "model.keras").write_text("kept")
    os.makedirs(tmp_path / "stage1")
    (tmp_path / "stage1" / ".tmp-123.keras").write_text("cut short")
    remove_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "stage1"]
    assert os.listdir(tmp_path / "stage1") == []
