"""Finding the images of a folder dataset that cannot be read, before a run reads them.

Every file gets a quick check: it can be opened, is not empty, starts like an image, and a
JPEG or PNG ends with its end marker (a cut download does not). Files that fail it are bad
at once; files that look cut or are of another format are decoded to decide. Small images
(the CIFAR-like data the pipeline keeps decoded in memory) are all decoded once, by the
decoder the pipeline uses, since a bit flipped inside a file passes the quick check.

The result is kept per file (size and modification time) in a cache
(``$BATS_TF_SCAN_CACHE``, default ``~/.cache/bats_tf/image_scans``), so a rerun, or another
run on the same data, only looks at files that changed: on 50,000 JPEG images the first scan
with decoding takes about 10 s on 2 cores, later ones under a second.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Sequence

import numpy as np

BAD_IMAGE_POLICIES = ("skip", "fail")  # broken images: left out (each named), or refused
CACHE_ENV = "BATS_TF_SCAN_CACHE"
CACHE_VERSION = 1
CACHE_KEEP = 256  # cache files kept (one per split folder), the most recently used
_JPEG, _PNG = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"
_OTHER_FORMATS = (b"GIF87a", b"GIF89a", b"BM", b"RIFF")  # decode_image reads these too
_TAIL = 64  # bytes read at a file's end for its end marker


def cache_dir() -> str:
    return os.environ.get(CACHE_ENV) or os.path.join(
        os.path.expanduser("~"), ".cache", "bats_tf", "image_scans"
    )


class ImageScan:
    """The scan of one folder's images: :meth:`quick_ok` after the quick checks, then
    :meth:`finish` with or without decoding every file.

    # Arguments
        folder: the split's folder (names the cache entry).
        paths: the image files, in the split's order.
    """

    def __init__(self, folder: str, paths: Sequence[str]):
        self.folder, self.paths = os.path.abspath(folder), list(paths)
        self.reasons: dict[int, str | None] = {}  # index -> why it is bad (None: good)
        self._suspect: set[int] = set()  # passed the quick check only by decoding
        self._decoded: set[int] = set()  # decoded fine (now or in a cached scan)
        self._stats: dict[int, tuple[int, int]] = {}
        cached = self._load_cache()
        self._changed = False  # a result the cache does not hold yet
        todo = []
        for i, path in enumerate(self.paths):
            try:
                st = os.stat(path)
            except OSError as e:
                self.reasons[i] = f"unreadable ({e.strerror})"
                continue
            self._stats[i] = (st.st_size, st.st_mtime_ns)
            entry = cached.get(self._key(path))
            if entry and tuple(entry[:2]) == self._stats[i]:
                self.reasons[i] = entry[2]
                if entry[3]:
                    self._decoded.add(i)
            else:
                todo.append(i)
        self._changed = bool(todo) or len(cached) != len(self._stats)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:  # file reads wait on the disk
            for i, (reason, suspect) in zip(todo, pool.map(self._quick, todo, chunksize=64)):
                self.reasons[i] = reason
                if suspect:
                    self._suspect.add(i)

    def quick_ok(self) -> list[int]:
        """Indices of the files that passed the quick check (or an earlier full one)."""
        return [i for i in range(len(self.paths)) if self.reasons.get(i) is None]

    def mark_bad(self, index: int, reason: str) -> None:
        self.reasons[index] = reason
        self._changed = True

    def finish(self, decode_all: bool) -> dict[int, str]:
        """Decodes the suspect files (every file not yet decoded, with ``decode_all``),
        stores the results in the cache and returns ``{index: reason}`` of the bad ones."""
        ok = [i for i in range(len(self.paths)) if self.reasons.get(i) is None]
        todo = [i for i in ok if i not in self._decoded and (decode_all or i in self._suspect)]
        if todo:
            self._changed = True
            decoded = _decodable([self.paths[i] for i in todo])
            for k, i in enumerate(todo):
                if k in decoded:
                    self._decoded.add(i)
                else:
                    self.reasons[i] = _decode_error(self.paths[i])
        self._save_cache()
        return {i: r for i, r in sorted(self.reasons.items()) if r is not None}

    # ------------------------------------------------------------------------- checks

    def _quick(self, index: int) -> tuple[str | None, bool]:
        """(why the file is bad, or None; whether only decoding can tell)."""
        path = self.paths[index]
        size = self._stats[index][0]
        if size == 0:
            return "empty file", False
        try:
            with open(path, "rb") as f:
                head = f.read(16)
                f.seek(max(0, size - _TAIL))
                tail = f.read()
        except OSError as e:
            return f"unreadable ({e.strerror})", False
        if head.startswith(_JPEG):
            return None, b"\xff\xd9" not in tail  # the end-of-image marker
        if head.startswith(_PNG):
            return None, not tail.endswith(_PNG_END)
        if head.startswith(_OTHER_FORMATS):
            return None, True
        return "not a JPEG or PNG image", False

    # -------------------------------------------------------------------------- cache

    def _key(self, path: str) -> str:
        return os.path.relpath(path, self.folder)

    def _cache_path(self) -> str:
        digest = hashlib.sha1(self.folder.encode("utf-8")).hexdigest()[:20]
        return os.path.join(cache_dir(), f"{digest}.json")

    def _load_cache(self) -> dict:
        try:
            with open(self._cache_path(), encoding="utf-8") as f:
                cached = json.load(f)
            if cached.get("version") == CACHE_VERSION and cached.get("folder") == self.folder:
                return cached["files"]
        except (OSError, ValueError, KeyError, AttributeError):
            pass
        return {}

    def _save_cache(self) -> None:
        """Stores the results (if any is new); a cache that cannot be written is only a slower
        next start."""
        from bats_tf.io_utils import atomic_write_text

        if not self._changed:
            return

        files = {
            self._key(self.paths[i]): [*self._stats[i], self.reasons.get(i), i in self._decoded]
            for i in self._stats
        }
        record = {"version": CACHE_VERSION, "folder": self.folder, "files": files}
        try:
            atomic_write_text(self._cache_path(), json.dumps(record))
            _prune(cache_dir())
        except Exception:  # noqa: BLE001 (any failure: no cache)
            pass


def _prune(folder: str) -> None:
    entries = sorted(
        (e for e in os.scandir(folder) if e.name.endswith(".json")),
        key=lambda e: e.stat().st_mtime,
    )
    for entry in entries[:-CACHE_KEEP]:
        os.unlink(entry.path)


def _decodable(paths: list[str]) -> set[int]:
    """Positions in ``paths`` of the files TensorFlow's decoder reads (in parallel)."""
    import bats_tf  # noqa: F401

    # isort: split
    import tensorflow as tf

    def decode(index, path):
        image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
        return index, tf.shape(image)[0]

    ds = tf.data.Dataset.from_tensor_slices((np.arange(len(paths)), np.array(paths)))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    ds = ds.ignore_errors().batch(4096)
    found: set[int] = set()
    with _quiet_fd2():  # libjpeg prints its complaints about a broken file itself
        for indices, _ in ds:
            found.update(indices.numpy().tolist())
    return found


def _decode_error(path: str) -> str:
    """Why TensorFlow cannot decode ``path``, in a few words."""
    import bats_tf  # noqa: F401

    # isort: split
    import tensorflow as tf

    try:
        with _quiet_fd2():
            tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except Exception as e:  # noqa: BLE001 (TensorFlow raises several kinds)
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        text = text.split("}}")[-1].split(" [Op:")[0].strip()
        return f"does not decode ({text})"
    return "does not decode"


@contextlib.contextmanager
def _quiet_fd2():
    """File descriptor 2 to /dev/null inside the block (C libraries write there directly)."""
    sys.stderr.flush()
    saved = os.dup(2)
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
