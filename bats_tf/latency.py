"""Per-op LCE latencies for the search's ``cost=latency``: measured here, or on a phone.

A latency table holds, for each op of a search space at each shape a search needs
(:class:`bats_tf.cost.EdgeShape`, keyed by :meth:`~bats_tf.cost.EdgeShape.key`, e.g.
``group_conv_3x3/c16/s32/x1/g2``), the time in milliseconds of that op alone, run by Larq
Compute Engine's interpreter at batch 1 on 1 thread. :func:`bats_tf.cost.latency_table`
turns it into the cost table of the search; ``none`` and a skip at stride 1 cost nothing and
have no entry.

How an entry is measured (:func:`measure`). The op is built as the final network builds it
(:func:`bats_tf.cost.op_model` with :func:`bats_tf.cost.deploy_op_config`: binary, no BN
after pools), converted by LCE (:func:`bats_tf.export.lce_flatbuffer`) and run by
:func:`bats_tf.export.lce_interpreter` (1 thread, XNNPACK for float ops) on a fixed random
input; the entry is the median of ``runs`` timed calls (after a few warm-up calls,
:func:`bats_tf.export.median_ms`) minus the interpreter's fixed overhead: the median, timed
the same way, of a model that does nothing but take the op's input and give an output of
the op's shape: an identity (a flatbuffer without ops) at stride 1, a strided slice
``x[:, ::2, ::2, :]`` at stride 2. It costs the call, the input copy and the output read,
so what is left is the op's own work (less a strided copy of its output at stride 2). An op
below that noise floor gets 0 (never a negative figure). LCE runs a binary conv as
``LceBconv2d`` only with a multiple of 32 input channels per group (``--deployable``); at
other widths it runs in float, and the table holds what that costs.

The file (JSON)::

    {"format": "bats-tf/latency-table", "schema_version": 1, "unit": "ms",
     "device": "<CPU model>", "threads": 1, "entries": {"<key>": <ms>, ...}}

It is a cache: :func:`save` merges new entries into the file (atomically), and the command
``bats-latency-table`` (:mod:`bats_tf.commands.latency_table`, the flags of a search and
``--latency_table=PATH``) measures only the entries the search needs that the file lacks.
A file measured on another device is not extended (use another file).

On a phone. ``--models_dir=DIR`` also writes each op's LCE flatbuffer,
``DIR/<op>-c<channels>-s<size>-x<stride>-g<groups>.tflite``, and ``DIR/models.json``
(``{key: file name}``). Time each one on the device with LCE's benchmark tool at 1 thread,
``lce_benchmark_model --graph=FILE --num_threads=1`` (it prints the average inference time
in microseconds; divide by 1000), and write the figures into a new file of the format above
with the device's name as ``device``; give it to the search as ``--latency_table``. The
benchmark times the interpreter's invoke alone, so there is no Python call overhead to take
off.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable

from bats_tf import cpu, io_utils
from bats_tf.cost import EdgeShape, costs_nothing, deploy_op_config, distinct_shapes
from bats_tf.errors import ConfigError
from bats_tf.search_space import Space, get_space
from bats_tf.widths import LCE_CHANNELS

FORMAT = "bats-tf/latency-table"
SCHEMA_VERSION = 1
UNIT = "ms"
THREADS = 1
RUNS = 100  # timed calls per figure (the median is kept)
MODELS_FILE = "models.json"  # in --models_dir: key -> flatbuffer file name
COMMAND = "bats-latency-table"
_SHOWN = 3  # missing keys named in an error


def _shapes(shapes) -> list[EdgeShape]:
    """:func:`cost.edge_shapes`'s output (a dict) or EdgeShapes, each once."""
    if isinstance(shapes, dict):
        return distinct_shapes(shapes)
    return list(dict.fromkeys(shapes))


def needed_keys(space: str | Space, shapes) -> list[str]:
    """The keys :func:`cost.latency_table` reads for ``space`` at ``shapes`` (the output of
    :func:`cost.edge_shapes`, or EdgeShapes), each once, shape by shape."""
    space = get_space(space)
    return [
        shape.key(op)
        for shape in _shapes(shapes)
        for op in space.primitives
        if not costs_nothing(op, shape)
    ]


def device() -> str:
    """This machine's CPU model: where a table is measured."""
    return cpu.model()


def model_file(key: str) -> str:
    """The file name of the flatbuffer of ``key`` in ``--models_dir``."""
    return key.replace("/", "-") + ".tflite"


# ------------------------------------------------------------------------------ the file


def _error(path: str, message: str) -> ConfigError:
    return ConfigError("latency_table", message, path)


def read(path: str) -> dict:
    """The checked contents of a latency table file (raises a one-line :class:`ConfigError`
    of ``latency_table``)."""
    if not io_utils.exists(path):
        raise _error(path, f"no such file; measure one with {COMMAND} and the search's flags")
    if io_utils.isdir(path):
        raise _error(path, "a folder; give the path of a JSON file")
    try:
        table = json.loads(io_utils.read_text(path))
    except json.JSONDecodeError as e:
        raise _error(path, f"not JSON ({e.msg} at line {e.lineno})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise _error(path, f"unreadable ({e})") from None
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        found = table.get("format") if isinstance(table, dict) else type(table).__name__
        raise _error(path, f"not a latency table (format {found!r}, expected {FORMAT!r})")
    version = table.get("schema_version")
    if version != SCHEMA_VERSION:
        raise _error(path, f"schema_version {version!r}; this bats-tf reads {SCHEMA_VERSION}")
    if table.get("unit") != UNIT:
        raise _error(path, f"unit {table.get('unit')!r}; expected {UNIT!r}")
    entries = table.get("entries")
    if not isinstance(entries, dict):
        raise _error(path, "no 'entries' object ({key: ms})")
    for key, value in entries.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0:
            raise _error(path, f"entry {key}: {value!r} is not a finite number of ms >= 0")
    return table


def load(path: str, needed_keys: Iterable[str] | None = None) -> dict[str, float]:
    """The entries (``key -> ms``) of the latency table at ``path``; raises a one-line
    :class:`ConfigError` of ``latency_table`` if the file is missing or wrong, or lacks any of
    ``needed_keys`` (see :func:`needed_keys`)."""
    entries = {k: float(v) for k, v in read(path)["entries"].items()}
    if needed_keys is not None:
        needed = list(dict.fromkeys(needed_keys))
        missing = [k for k in needed if k not in entries]
        if missing:
            shown = ", ".join(missing[:_SHOWN]) + (", ..." if len(missing) > _SHOWN else "")
            raise _error(
                path,
                f"lacks {len(missing)} of the {len(needed)} entries this search needs "
                f"({shown}); measure them with {COMMAND}, the search's flags and this "
                "--latency_table",
            )
    return entries


def check_device(path: str, name: str | None = None) -> dict[str, float]:
    """The entries of the table at ``path`` (none if there is no file yet); raises a
    :class:`ConfigError` if the file is wrong or was measured on another device than
    ``name`` (default: this machine)."""
    if not io_utils.exists(path):
        return {}
    table = read(path)
    name = device() if name is None else name
    if table.get("device") != name:
        raise _error(
            path,
            f"measured on {table.get('device')!r}, not on this device ({name!r}); "
            "give another file",
        )
    return {k: float(v) for k, v in table["entries"].items()}


def save(path: str, entries: dict[str, float], device: str) -> None:
    """Writes ``entries`` into the table at ``path`` (atomically), keeping the entries the
    file already holds (a new figure replaces an old one of the same key). Refuses a file of
    another device, and figures that are not finite numbers >= 0."""
    for key, value in entries.items():
        if not math.isfinite(value) or value < 0:
            raise _error(path, f"entry {key}: {value!r} is not a finite number of ms >= 0")
    merged = {**check_device(path, device), **{k: float(v) for k, v in entries.items()}}
    table = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "unit": UNIT,
        "device": device,
        "threads": THREADS,
        "entries": dict(sorted(merged.items())),
    }
    io_utils.atomic_write_json(path, table)


def read_models(models_dir: str) -> dict[str, str]:
    """``key -> file name`` of ``models_dir/models.json``, the files that exist only."""
    path = os.path.join(models_dir, MODELS_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            models = json.load(f)
    except (OSError, ValueError):
        return {}  # rewritten from the flatbuffers made again
    if not isinstance(models, dict):
        return {}
    return {
        k: v
        for k, v in models.items()
        if isinstance(v, str) and os.path.isfile(os.path.join(models_dir, v))
    }


# ------------------------------------------------------------------------------ measuring


def measure(
    space: str | Space,
    shapes,
    known: Iterable[str] = (),
    runs: int = RUNS,
    scaling: bool = True,
    shortcut: bool = True,
    models_dir: str | None = None,
    on_entry: Callable[[str, float], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """LCE latency (ms) of each op of ``space`` at each of ``shapes`` (see
    :func:`needed_keys`) whose key is not in ``known``: the new entries only.

    ``runs`` timed calls per figure (median), 1 thread, minus the figure of a model that
    does nothing at the same input and output shapes (module docstring), clamped at 0.
    ``models_dir``: also writes each needed op's LCE flatbuffer there (those not written
    before) and ``models.json``.
    ``on_entry(key, ms)`` is called after each figure (e.g. to save it at once), ``progress``
    with one line per op and shape.
    """
    import numpy as np

    from bats_tf import cost, export, network

    space = get_space(space)
    known = set(known)
    models = read_models(models_dir) if models_dir else {}
    todo = []
    for shape in _shapes(shapes):
        for op in space.primitives:
            key = shape.key(op)
            timed, written = key not in known, models_dir is None or key in models
            if not costs_nothing(op, shape) and (timed or not written):
                todo.append((op, shape, timed, written))
    entries: dict[str, float] = {}
    overheads: dict[tuple[int, int, int], float] = {}
    for n, (op, shape, timed, written) in enumerate(todo, 1):
        key = shape.key(op)
        config = deploy_op_config(space, shape.groups, scaling, shortcut)
        model = cost.op_model(op, shape, config)
        with _quiet_fd2():  # the converter's diagnostics of a binary conv left in float
            flatbuffer = export.lce_flatbuffer(model)
        counts = export.tflite_op_counts(flatbuffer)
        in_float = len(network.binary_convs(model)) - counts.get(export.BCONV, 0)
        done = []
        if timed:
            image = np.random.RandomState(0).standard_normal(
                (1, shape.size, shape.size, shape.channels)
            )
            image = image.astype(np.float32)
            where = (shape.size, shape.channels, shape.stride)
            if where not in overheads:
                overheads[where] = _median_ms(_overhead_flatbuffer(shape), image, runs)
            ms = max(0.0, _median_ms(flatbuffer, image, runs) - overheads[where])
            entries[key] = ms
            if on_entry is not None:
                on_entry(key, ms)
            done.append(f"{ms:.4f} ms")
        if not written:
            models[key] = model_file(key)
            io_utils.atomic_write_bytes(os.path.join(models_dir, models[key]), flatbuffer)
            io_utils.atomic_write_json(os.path.join(models_dir, MODELS_FILE), models)
            done.append(models[key])
        if progress is not None:
            if in_float > 0:
                done.append(f"binary conv in float (LCE needs {LCE_CHANNELS} channels per group)")
            progress(f"[{n}/{len(todo)}] {key}: {', '.join(done)}")
    return entries


def _median_ms(flatbuffer: bytes, image, runs: int) -> float:
    from bats_tf import export

    with _quiet_fd2():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
        interpreter = export.lce_interpreter(flatbuffer, THREADS).interpreter
    return export.median_ms(lambda: interpreter.predict([image]), runs)


def _overhead_flatbuffer(shape: EdgeShape) -> bytes:
    """The LCE flatbuffer of a model with the input and output shapes of an op at ``shape``
    that does nothing else: no op at stride 1, a strided slice at stride 2."""
    import tensorflow as tf

    from bats_tf import export

    x = tf.keras.Input((shape.size, shape.size, shape.channels), name="x")
    if shape.stride == 1:
        y = tf.keras.layers.Activation("linear", name="identity")(x)
    else:
        s = shape.stride
        y = tf.keras.layers.Lambda(lambda t: t[:, ::s, ::s, :], name="subsample")(x)
    with _quiet_fd2():
        return export.lce_flatbuffer(tf.keras.Model(x, y, name="overhead"))


@contextlib.contextmanager
def _quiet_fd2():
    """What the converters write to file descriptor 2 (MLIR diagnostics, TensorFlow's C++
    log lines) is kept in a temporary file, and shown only if the block fails."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if failed:
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))
                sys.stderr.flush()
