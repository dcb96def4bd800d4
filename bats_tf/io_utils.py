"""Small file helpers: atomic writes so a crash never leaves a half-written file, and the
few file-system calls of a run's outputs, local or remote (``gs://...``: ``tf.io.gfile``).

TensorFlow is imported only for a remote path, so commands can check local folders before
it loads.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import uuid

from bats_tf.errors import WriteFailed

TEMPORARY_PREFIX = ".tmp-"  # files being written (a killed run may leave some behind)


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
    tmp = os.path.join(os.path.dirname(target), f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}")
    gfile = _gfile()
    gfile.copy(source, tmp, overwrite=True)
    gfile.rename(tmp, target, overwrite=True)


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same folder and a rename.

    A failed write (no space, read-only file system) leaves ``path`` as it was and raises
    :class:`~bats_tf.errors.WriteFailed` naming ``path`` and the errno.
    """
    try:
        _atomic_write_bytes(path, data)
    except OSError as e:
        raise write_failure(e, path) or e from None
    except Exception as e:  # a remote file system's error (tf.errors.OpError)
        failure = write_failure(e, path)
        if failure is None:
            raise
        raise failure from None


def _atomic_write_bytes(path: str, data: bytes) -> None:
    if is_remote(path):
        folder = os.path.dirname(path)
        makedirs(folder)
        tmp = os.path.join(folder, f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}")
        with _gfile().GFile(tmp, "wb") as f:
            f.write(data)
        _gfile().rename(tmp, path, overwrite=True)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=folder)
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


_STRERRORS = {
    os.strerror(code): name
    for code, name in errno.errorcode.items()
    if name in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "EFBIG")
}


def write_failure(error: BaseException, path: str | None = None) -> WriteFailed | None:
    """A failed write as :class:`~bats_tf.errors.WriteFailed`, or None if ``error`` is not one.

    ``error`` is an ``OSError`` (its errno), or a TensorFlow error of a file-system call (a
    checkpoint, a summary), whose message ends with ``<path>; <strerror>``. ``path`` names the
    file meant (default: the one in the error).
    """
    if isinstance(error, WriteFailed):
        return error
    if isinstance(error, OSError) and error.errno is not None:
        name = errno.errorcode.get(error.errno, f"errno {error.errno}")
        reason = error.strerror or os.strerror(error.errno)
        return WriteFailed(path or error.filename or "?", name, reason)
    text = str(error)
    h5 = re.search(r"name = '([^']+)'.*errno = (\d+)", text, re.S)  # HDF5's (h5py) wording
    if h5 and int(h5.group(2)) in errno.errorcode:
        code = int(h5.group(2))
        return WriteFailed(path or h5.group(1), errno.errorcode[code], os.strerror(code))
    if type(error).__module__.startswith("tensorflow"):
        text = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text.strip().splitlines()[0])
        text = re.sub(r"\s*\[Op:\w+\].*$", "", text)
        for strerror, name in _STRERRORS.items():
            if text.endswith(f"; {strerror}") or text == strerror:
                where = text[: -len(strerror)].rstrip("; ").strip()
                return WriteFailed(path or where or "?", name, strerror)
    return None


def remove_temporaries(folder: str) -> None:
    """Deletes the temporary files a killed writer left in ``folder`` and its subfolders
    (local; call it only while holding the folder's lock, when no one else writes there)."""
    if is_remote(folder) or not os.path.isdir(folder):
        return
    for parent, _, names in os.walk(folder):
        for name in names:
            if name.startswith(TEMPORARY_PREFIX):
                try:
                    os.unlink(os.path.join(parent, name))
                except OSError:
                    pass


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
