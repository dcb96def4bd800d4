"""One run per output folder: the lock is exclusive, names its holder, and dies with it."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bats_tf.run_lock import LOCK_FILE, FolderInUse, RunLock, check_free, holder

HOLD = """
import sys, time
from bats_tf.run_lock import RunLock
RunLock(sys.argv[1], "bats-search").acquire()
print("held", flush=True)
time.sleep(600)
"""


def _holding(folder):
    """A child process holding ``folder``'s lock (it has printed "held")."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, folder], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    folder = str(tmp_path / "run")
    proc = _holding(folder)
    try:
        found = holder(folder)
        assert found["pid"] == proc.pid and found["command"] == "bats-search"
        with pytest.raises(FolderInUse) as e:
            RunLock(folder, "bats-train").acquire()
        message = str(e.value)
        assert message.startswith(f"output_dir={folder}: in use by another run (PID {proc.pid}")
        assert "bats-search, since " in message and "\n" not in message
        with pytest.raises(FolderInUse):
            check_free(folder)
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_left_by_a_killed_run_never_blocks(tmp_path):
    folder = str(tmp_path / "run")
    proc = _holding(folder)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(os.path.join(folder, LOCK_FILE))  # the file stays, the lock does not
    assert holder(folder) is None
    check_free(folder)
    with RunLock(folder, "bats-train"):
        with open(os.path.join(folder, LOCK_FILE)) as f:
            record = json.load(f)
        assert record["pid"] == os.getpid() and record["command"] == "bats-train"
    assert holder(folder) is None  # released at the end of the block


def test_checking_a_folder_writes_nothing(tmp_path):
    folder = tmp_path / "run"
    check_free(str(folder))
    assert not folder.exists()
    os.makedirs(folder)
    (folder / LOCK_FILE).write_text("{}")
    before = os.stat(folder / LOCK_FILE).st_mtime_ns
    time.sleep(0.01)
    check_free(str(folder))
    assert os.stat(folder / LOCK_FILE).st_mtime_ns == before
