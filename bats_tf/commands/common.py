"""What every command shares: flags made from a config, one-line errors, exit codes, presets.

A config dataclass declared with :func:`bats_tf.settings.setting` gives one flag per setting
(:func:`define_flags`) and is built back from the parsed flags (:func:`config_from_flags`).
Errors are one line on stderr: exit 2 for bad input, 1 for a failed run, 128 + signal number
after an interrupt (see :mod:`bats_tf.errors`).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import tempfile
import traceback

from absl import app, flags

from bats_tf import io_utils, settings
from bats_tf.datasets import DATA_DIR_HELP, SPLIT_HELP, check_data, dataset_setting
from bats_tf.errors import (
    RUN_EXIT,
    USAGE_EXIT,
    ConfigError,
    Interrupted,
    RunError,
    UsageError,
)
from bats_tf.image_scan import BAD_IMAGE_POLICIES
from bats_tf.io_utils import is_remote
from bats_tf.signals import raise_on_sigterm
from bats_tf.strategy import make_strategy

FLAGS = flags.FLAGS
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")

PRESETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


# ------------------------------------------------------------------------ flags from configs


def define_flags(cls, flag_values=FLAGS) -> None:
    """One flag per setting of the config class ``cls`` (but those declared ``flag=False``)."""
    kw = dict(flag_values=flag_values)
    for field in settings.declared(cls):
        meta = field.metadata
        if not meta["flag"]:
            continue
        kind = settings.value_type(cls, field.name)
        name, default, help_ = field.name, field.default, meta["help"]
        if kind is bool:
            flags.DEFINE_bool(name, default, help_, **kw)
        elif kind is str and meta["choices"]:
            flags.DEFINE_enum(name, default, list(meta["choices"]), help_, **kw)
        elif kind is str:
            flags.DEFINE_string(name, default, help_, **kw)
        elif kind in (int, float):
            bounds = dict(
                lower_bound=None if meta["lower_open"] else meta["lower"],
                upper_bound=None if meta["upper_open"] else meta["upper"],
            )
            if meta["lower_open"] or meta["upper_open"]:
                help_ = f"{help_} Must be {settings.bounds_text(meta)}."
            if kind is int:
                flags.DEFINE_integer(name, default, help_, **bounds, **kw)
            else:
                parser = _FiniteFloatParser(bounds["lower_bound"], bounds["upper_bound"])
                flags.DEFINE(
                    parser, name, default, help_, serializer=flags.ArgumentSerializer(), **kw
                )
        elif kind is tuple:
            shown = None if default is None else [str(v) for v in default]
            flags.DEFINE_list(name, shown, help_, **kw)
        else:
            raise TypeError(f"{cls.__name__}.{name}: no flag for {kind}")


class _FiniteFloatParser(flags.FloatParser):
    """absl's float parser, refusing inf and nan first (they pass or fail its bounds by
    chance), so every float flag says the same of them."""

    def convert(self, argument):
        value = super().convert(argument)
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


def config_from_flags(cls, flag_values=FLAGS, **values):
    """A checked ``cls`` from the flags; ``values`` replace flags (e.g. resolved paths)."""
    kwargs = {}
    for field in settings.declared(cls):
        if not field.metadata["flag"] or field.name not in flag_values:
            continue
        value = flag_values[field.name].value
        if settings.value_type(cls, field.name) is tuple and value is not None:
            item = settings.item_type(cls, field.name)
            try:
                value = tuple(item(v) for v in value)
            except ValueError:
                raise ConfigError(field.name, f"expected {item.__name__} values") from None
        kwargs[field.name] = value
    config = cls(**{**kwargs, **values})
    config.check()
    return config


def define_data_flags(split: str, used_as: str, default: str = "cifar10") -> None:
    """--dataset, --data_dir and --split of a command without a config."""
    dataset = dataset_setting(default, used_as).metadata
    flags.DEFINE_enum("dataset", default, list(dataset["choices"]), dataset["help"])
    flags.DEFINE_string("data_dir", None, DATA_DIR_HELP)
    flags.DEFINE_string("split", split, SPLIT_HELP)


def define_bad_images_flag(flag_values=FLAGS) -> None:
    """--bad_images of a command that reads an image folder."""
    flags.DEFINE_enum(
        "bad_images",
        "skip",
        list(BAD_IMAGE_POLICIES),
        "Broken images of a folder dataset (empty, cut short, not decodable): skip leaves "
        "each out with a warning naming it; fail refuses the data before the run, naming them.",
        flag_values=flag_values,
    )


def use_bad_images_flag() -> None:
    """Applies --bad_images to the data loaders (after TensorFlow has started)."""
    from bats_tf import data

    data.set_bad_images(FLAGS.bad_images)


# ------------------------------------------------------------------------------ checks


def check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def check_at_least(minimum: float, *names: str) -> None:
    """Each named flag is at least ``minimum``."""
    for name in names:
        value = getattr(FLAGS, name)
        check(
            value is not None and value >= minimum, f"--{name}={value}: must be at least {minimum}"
        )


def check_data_flags() -> None:
    """--dataset and --data_dir fit together; the folder exists."""
    check_data(FLAGS.dataset, FLAGS.data_dir)
    if FLAGS.dataset == "folder" and not is_remote(FLAGS.data_dir):
        check(os.path.isdir(FLAGS.data_dir), f"--data_dir={FLAGS.data_dir}: no such folder")


def check_model_flag() -> None:
    """--model is given and exists."""
    check(FLAGS.model, "--model is required")
    check(os.path.exists(FLAGS.model), f"--model={FLAGS.model}: no such file")
    check(not os.path.isdir(FLAGS.model), f"--model={FLAGS.model}: a folder; give a .keras file")


def check_no_arguments(argv: list[str]) -> None:
    check(len(argv) == 1, f"unexpected arguments: {' '.join(argv[1:])}")


def check_output_not_in_data(path: str, flag: str = "--output_dir") -> None:
    """The output folder is not inside the image folder --data_dir (its files would become
    a class or a split of the data)."""
    if FLAGS.dataset != "folder" or not FLAGS.data_dir or is_remote(path):
        return
    data_dir, out = os.path.realpath(FLAGS.data_dir), _real(path)
    check(
        os.path.commonpath([data_dir, out]) != data_dir,
        f"{flag}={path}: inside --data_dir={FLAGS.data_dir}; its files would become part of "
        "the data",
    )


def _real(path: str) -> str:
    """``os.path.realpath`` of a path that may not exist yet (its existing part resolved)."""
    path = os.path.abspath(path)
    tail = []
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path, name = os.path.split(path)
        tail.append(name)
    return os.path.join(os.path.realpath(path), *reversed(tail))


def own_files(folder: str) -> list[str]:
    """The names in ``folder`` but the run lock and temporary files of a cut write."""
    from bats_tf.run_lock import LOCK_FILE

    return [
        n
        for n in io_utils.listdir(folder)
        if n != LOCK_FILE and not n.startswith(io_utils.TEMPORARY_PREFIX)
    ]


def check_writable_dir(path: str, flag: str = "--output_dir") -> None:
    """The folder exists or can be created, and is writable (a remote one: left to the run)."""
    if is_remote(path):
        return
    parent = path
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    target = parent or "."
    check(os.path.isdir(target), f"{flag}={path}: {target} is not a folder")
    check(os.access(target, os.W_OK), f"{flag}={path}: {target} is not writable")


def check_classes(info) -> None:
    """The data of a search or a training has two classes or more."""
    check(
        info.num_classes >= 2,
        f"--data_dir={FLAGS.data_dir}: split '{FLAGS.split}' has one class "
        f"({', '.join(info.class_names)}); a classifier needs two or more (one folder per class)",
    )


# ------------------------------------------------------------------------- running


def preset(value: str) -> str:
    """A flagfile path, or the installed preset of that name (``search_tiny``)."""
    if os.path.isfile(value) or os.sep in value:
        return value  # a file of that name wins; a folder of that name does not
    name = value if value.endswith(".cfg") else f"{value}.cfg"
    path = os.path.join(PRESETS, name)
    return path if os.path.isfile(path) else value


def expand_presets(argv: list[str]) -> list[str]:
    """``--flagfile=NAME`` of an installed preset becomes its path (absl reads flagfiles)."""
    out = list(argv[:1])
    args = iter(argv[1:])
    for arg in args:
        if arg.startswith("--flagfile="):
            arg = "--flagfile=" + preset(arg.split("=", 1)[1])
        elif arg == "--flagfile":
            arg = "--flagfile=" + preset(next(args, ""))
        out.append(arg)
    return out


def message(error: Exception) -> str:
    """The error line: a :class:`ConfigError` (or a :class:`RunError` of a setting) names the
    flag and its value."""
    if getattr(error, "param", None) in FLAGS:
        value = FLAGS[error.param].value
        if isinstance(value, list):
            value = ",".join(value)
        shown = f"--{error.param}" if value is None else f"--{error.param}={value}"
        return f"{shown}: {error.message}"
    return str(error)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with malformed or unknown flags reported like other bad input."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        text = str(e)
        print(f"error: {text[5:] if text.startswith('flag --') else text}", file=sys.stderr)
        sys.exit(USAGE_EXIT)


def wrap(main):
    """Wraps an absl ``main``: one line on stderr and exit 2 for bad input, 1 for a failed run."""

    def wrapped(argv):
        from absl import logging

        logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.WARNING)
        raise_on_sigterm()
        try:
            return main(argv)
        except Interrupted as e:
            print(f"interrupted: {e}", file=sys.stderr)
            sys.exit(128 + e.signum)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(128 + signal.SIGINT)
        except (RunError, UsageError) as e:
            _fail(e)
        except Exception as e:
            failure = io_utils.write_failure(e)  # a file that could not be written
            if failure is None:
                raise
            _fail(failure)

    return wrapped


def _fail(error: Exception):
    """Reports ``error`` in one line and exits: 1 for a failed run, 2 for bad input."""
    if FLAGS.verbose:
        traceback.print_exc()
    _quiet_tensorflow()
    print(f"error: {message(error)}", file=sys.stderr)
    sys.exit(RUN_EXIT if isinstance(error, RunError) else USAGE_EXIT)


def start(main, argv: list[str] | None = None) -> None:
    """Runs a command's ``main`` with absl: presets resolved, errors in one line.

    ``--help`` shows the command module's docstring and every flag of bats-tf's modules (absl
    shows only the main module's).
    """
    argv = expand_presets(sys.argv if argv is None else argv)
    sys.modules["__main__"].__doc__ = sys.modules[main.__module__].__doc__
    for module, defined in FLAGS.flags_by_module_dict().items():
        if module.startswith("bats_tf."):
            for flag in defined:
                FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    app.run(wrap(main), argv=argv, flags_parser=parse_flags)


def start_tensorflow(strategy: str = "default") -> None:
    """Imports TensorFlow and starts its runtime with ``strategy`` (a multi-worker strategy
    must come first), without the C++ log lines this prints.

    TensorFlow writes them (oneDNN, CUDA stubs, ``cuInit``) to file descriptor 2 before its
    logging can be configured, so ``TF_CPP_MIN_LOG_LEVEL`` does not reach them. They are kept
    in a temporary file and shown only if the start fails; ``--verbose`` shows them always.
    """
    if "tensorflow" in sys.modules or FLAGS.verbose:
        _import_tensorflow(strategy)
        return
    with tempfile.TemporaryFile() as captured:
        try:
            with _fd2_to(captured):
                _import_tensorflow(strategy)
        except BaseException:
            captured.seek(0)
            sys.stderr.buffer.write(captured.read())
            sys.stderr.flush()
            raise


def _import_tensorflow(strategy: str) -> None:
    import bats_tf  # noqa: F401  (sets TensorFlow's environment before it loads)

    # isort: split
    import tensorflow as tf

    if strategy == "default":
        tf.config.list_physical_devices()
    else:
        make_strategy(strategy)


@contextlib.contextmanager
def _fd2_to(file):
    """File descriptor 2 goes to ``file`` inside the block (Python's stderr too)."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's clean-up warnings (e.g. of a failed restore) out of the error output."""
    if "tensorflow" in sys.modules and not FLAGS.verbose:
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")
