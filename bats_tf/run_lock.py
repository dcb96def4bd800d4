"""One run per output folder: an OS-level lock (``fcntl.flock``) on a file in the folder.

A command takes the lock once every check has passed (so a refused run leaves no trace) and
holds it until it ends: a second run on the same folder is refused, naming the holder's PID
and command. The kernel releases the lock when its process dies, however it dies, so a lock
left by a killed run never blocks the rerun; the file itself stays (it only records who held
the lock last). A remote folder (``gs://``) is not locked. No TensorFlow, no absl.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import sys

from bats_tf import io_utils
from bats_tf.errors import ConfigError

LOCK_FILE = ".bats-tf.lock"


class FolderInUse(ConfigError):
    """Another live process holds the folder's lock; the message names it (the commands show
    it as ``--output_dir=...: in use by another run (PID ...)``)."""

    def __init__(self, param: str, folder: str, found: dict):
        pid = found.get("pid", "unknown")
        command = found.get("command", "unknown command")
        since = f", since {found['since']}" if found.get("since") else ""
        super().__init__(
            param,
            f"in use by another run (PID {pid}, {command}{since}); wait for it to end or use "
            "another folder",
            folder,
        )


def holder(folder: str) -> dict | None:
    """Who holds ``folder``'s lock now (pid, command, since), or None when it is free.

    Reads only: the lock file is opened read-only and never created.
    """
    path = os.path.join(folder, LOCK_FILE)
    if io_utils.is_remote(folder):
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_record(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_free(folder: str, param: str = "output_dir") -> None:
    """Raises :class:`FolderInUse` if a live run holds ``folder`` (reads only)."""
    found = holder(folder)
    if found is not None:
        raise FolderInUse(param, folder, found)


class RunLock:
    """The lock of one folder, held from :meth:`acquire` to :meth:`release` (or process end).

    # Arguments
        folder: the run's folder (created by :meth:`acquire` if missing).
        command: what holds it, as shown to a second run (``bats-search``).
        param: the setting that names the folder, for messages.
    """

    def __init__(self, folder: str, command: str, param: str = "output_dir"):
        self.folder, self.command, self.param = folder, command, param
        self.fd: int | None = None

    @property
    def path(self) -> str:
        return os.path.join(self.folder, LOCK_FILE)

    def acquire(self) -> RunLock:
        """Takes the lock, or raises :class:`FolderInUse` naming the holder."""
        if io_utils.is_remote(self.folder) or self.fd is not None:
            return self
        os.makedirs(self.folder, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            found = _read_record(fd)
            os.close(fd)
            raise FolderInUse(self.param, self.folder, found) from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        record = {
            "pid": os.getpid(),
            "command": self.command,
            "argv": sys.argv,
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        try:  # who holds it, for the message of a second run; the lock itself is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise  # a full disk still allows the lock; the record is only informative
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextlib.contextmanager
def hold(folder: str, command: str, param: str = "output_dir"):
    """``with hold(folder, "bats-train"):`` the folder is this run's inside the block."""
    with RunLock(folder, command, param) as lock:
        yield lock


def _read_record(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        record = json.loads(text)
        return record if isinstance(record, dict) else {}
    except (OSError, ValueError):
        return {}  # the holder has just taken the lock and not yet written who it is
