"""The class names a model or a run was made with, recorded beside it (``classes.json``), so
data is matched to a model by class name, never by position. No TensorFlow.

``classes.json`` lies beside every ``model.keras`` a training writes, and in the folder of
every search and training run, with the size of the split the run reads: a run resumed on
data whose classes or images changed is refused.
"""

from __future__ import annotations

import json
import os

from bats_tf import io_utils
from bats_tf.errors import UsageError

CLASSES_FILE = "classes.json"


def write(folder: str, class_names, **data) -> None:
    """``folder/classes.json``: the class names (in the order of a model's outputs), and
    ``data`` (dataset, split, number of examples) of a run."""
    record = {"class_names": list(class_names), **data}
    io_utils.atomic_write_json(os.path.join(folder, CLASSES_FILE), record)


def read(folder: str) -> dict | None:
    """The record of ``folder/classes.json`` (None: there is none)."""
    path = os.path.join(folder, CLASSES_FILE)
    if not io_utils.exists(path):
        return None
    try:
        record = json.loads(io_utils.read_text(path))
        names = record["class_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError("class_names is not a list of names")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"{path}: unreadable class names ({e})") from None
    return record


def names(folder: str) -> tuple[str, ...] | None:
    """The class names recorded in ``folder`` (None: none recorded)."""
    record = read(folder)
    return None if record is None else tuple(record["class_names"])


def difference(known, found) -> str:
    """What differs between a model's classes ``known`` and the data's ``found``, in words."""
    missing = [c for c in known if c not in found]
    extra = [c for c in found if c not in known]
    parts = []
    if extra:
        parts.append(f"the data has classes it was not trained on: {_listed(extra)}")
    if missing:
        parts.append(f"the data lacks its classes {_listed(missing)}")
    if not parts:
        parts.append("its classes are in another order than the data's")
    return "; ".join(parts) + " (classes are matched by name, never by position)"


def check_run_data(folder: str, flag: str, class_names, num_examples: int) -> None:
    """The data a run in ``folder`` started on is the data it is resumed on: the same class
    names and the same number of examples (raises :class:`UsageError`)."""
    record = read(folder)
    if record is None:
        return
    path = os.path.join(folder, CLASSES_FILE)
    if tuple(record["class_names"]) != tuple(class_names):
        raise UsageError(
            f"{flag}={folder}: its run started on other classes ({path}): "
            f"{difference(record['class_names'], class_names)}; use a new {flag}"
        )
    then = record.get("num_examples")
    if then is not None and then != num_examples:
        raise UsageError(
            f"{flag}={folder}: its run started on {then} examples of the split, the data now "
            f"has {num_examples} (images were added or removed); use a new {flag}"
        )


def _listed(names, most: int = 6) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
