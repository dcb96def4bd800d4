"""Small file helpers: atomic writes so a crash never leaves a half-written file, and the
few file-system calls of a run's outputs, local or remote (``gs://...``: ``tf.io.gfile``).

TensorFlow is imported only for a remote path, so commands can check local folders before
it loads.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid


def is_remote(path: str) -> bool:
    """A path of a TensorFlow file system other than the local one (``gs://``, ``ram://``)."""
    return "://" in path


def _gfile():
    import bats_tf  # noqa: F401

    # isort: split
    import tensorflow as tf

    return tf.io.gfile


def exists(path: str) -> bool:
    return _gfile().exists(path) if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _gfile().isdir(path) if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
    """Names in a folder (no trailing slashes)."""
    if is_remote(path):
        return [name.rstrip("/") for name in _gfile().listdir(path)]
    return os.listdir(path)


def makedirs(path: str) -> None:
    if is_remote(path):
        _gfile().makedirs(path)
    else:
        os.makedirs(path, exist_ok=True)


def absolute(path: str) -> str:
    """``os.path.abspath`` for a local path; a remote one as it is."""
    return path if is_remote(path) else os.path.abspath(path)


def read_text(path: str) -> str:
    if is_remote(path):
        with _gfile().GFile(path, "r") as f:
            return f.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def copy(source: str, target: str) -> None:
    """Copies a file to ``target`` through a temporary name beside it and a rename."""
    tmp = os.path.join(os.path.dirname(target), f".tmp-{uuid.uuid4().hex}")
    gfile = _gfile()
    gfile.copy(source, tmp, overwrite=True)
    gfile.rename(tmp, target, overwrite=True)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    if is_remote(path):
        folder = os.path.dirname(path)
        makedirs(folder)
        tmp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}")
        with _gfile().GFile(tmp, "wb") as f:
            f.write(data)
        _gfile().rename(tmp, path, overwrite=True)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a new file follows the umask
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def tensorboard_hparams(settings: dict) -> dict:
    """A run's settings as TensorBoard hparams values (str, bool, int or float; None as "")."""
    return {
        k: "" if v is None else v if isinstance(v, (str, bool, int, float)) else str(v)
        for k, v in settings.items()
    }
