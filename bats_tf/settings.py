"""Settings declared once: a dataclass field carries its default, help, choices and bounds.

    epochs: int = setting(50, "Search epochs.", lower=1)
    momentum: float = setting(0.9, "SGD momentum.", lower=0, below=1)

:func:`validate` checks a config against its declarations; the commands make their flags
from them (:mod:`bats_tf.commands.common`). No TensorFlow, no absl.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

from bats_tf.errors import ConfigError


def setting(
    default,
    help: str,  # noqa: A002 (the word absl uses)
    *,
    choices: typing.Sequence | None = None,
    lower: float | None = None,
    upper: float | None = None,
    above: float | None = None,
    below: float | None = None,
    flag: bool = True,
):
    """A dataclass field with its help, choices and bounds: ``lower <= value <= upper``,
    ``above < value < below``.

    ``None`` is allowed when it is the default. ``flag=False`` keeps the setting off the
    command line (the library sets it).
    """
    metadata = dict(
        help=help,
        choices=tuple(choices) if choices is not None else None,
        lower=lower if above is None else above,
        upper=upper if below is None else below,
        lower_open=above is not None,
        upper_open=below is not None,
        flag=flag,
    )
    return dataclasses.field(default=default, metadata=metadata)


def declared(cls) -> list[dataclasses.Field]:
    """The fields of ``cls`` declared with :func:`setting`, in order."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def value_type(cls, name: str) -> type:
    """The type of a setting without ``None``: bool, int, float, str or tuple."""
    hint = typing.get_type_hints(cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint


def item_type(cls, name: str) -> type:
    """The type of the items of a tuple setting."""
    return typing.get_args(typing.get_type_hints(cls)[name])[0]


def bounds_text(meta) -> str:
    """The range of a setting in words: "at least 1", "in (0, 100)", "positive"."""
    lo, hi = meta["lower"], meta["upper"]
    if lo is not None and hi is not None:
        left, right = "(" if meta["lower_open"] else "[", ")" if meta["upper_open"] else "]"
        return f"in {left}{lo}, {hi}{right}"
    if lo is not None:
        if meta["lower_open"]:
            return "positive" if lo == 0 else f"greater than {lo}"
        return f"at least {lo}"
    if hi is not None:
        return f"less than {hi}" if meta["upper_open"] else f"at most {hi}"
    return ""


def _in_bounds(value, meta) -> bool:
    lo, hi = meta["lower"], meta["upper"]
    if lo is not None and (value <= lo if meta["lower_open"] else value < lo):
        return False
    return hi is None or (value < hi if meta["upper_open"] else value <= hi)


def _show(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def validate(config) -> None:
    """Checks each setting of ``config`` against its declaration; raises :class:`ConfigError`."""
    for f in declared(type(config)):
        value, meta = getattr(config, f.name), f.metadata
        if value is None and f.default is None:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f.name, "must be a finite number", value)
        if meta["choices"] is not None and value not in meta["choices"]:
            shown = "|".join(_show(c) for c in meta["choices"])
            raise ConfigError(f.name, f"must be one of <{shown}>", _show(value))
        if not isinstance(value, bool) and isinstance(value, (int, float)):
            if not _in_bounds(value, meta):
                raise ConfigError(f.name, f"must be {bounds_text(meta)}", value)
