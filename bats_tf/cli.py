"""What every script shares: clear one-line errors, exit codes, strategies, output folders.

Exit codes: 0 done, 1 the run failed (:class:`RunError`), 2 bad input (:class:`UsageError`
and the data and genotype errors), 128 + signal number after an interrupt (Ctrl-C: 130,
SIGTERM: 143). This module does not import TensorFlow, so scripts can check their flags
before paying for it.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import traceback

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")

RUN_EXIT = 1
USAGE_EXIT = 2
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


class UsageError(ValueError):
    """A flag, file or folder given by the user is wrong; the message names it."""


class RunError(RuntimeError):
    """The run cannot go on (non-finite loss, corrupt checkpoint); the message says why."""


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM (the search first writes a checkpoint)."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum


DATASETS = ("cifar10", "cifar100", "imagenet2012", "folder", "cifar10_mini")


class InterruptFlag:
    """Turns the first SIGINT or SIGTERM into a flag checked after each step.

    A second signal stops at once (KeyboardInterrupt), keeping the last checkpoint.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = None
        try:
            self._old = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread
            self._old = {}

    def _handle(self, signum, _frame):
        if self.signum is not None:
            self.restore()
            raise KeyboardInterrupt
        self.signum = signum

    def restore(self):
        for s, handler in self._old.items():
            signal.signal(s, handler)
        self._old = {}


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


def define_data_flags(split: str, help_dataset: str = "Dataset", default: str = "cifar10"):
    """--dataset, --data_dir and --split, the same in every script."""
    flags.DEFINE_enum(
        "dataset",
        default,
        list(DATASETS),
        f"{help_dataset}: tfds name, an image folder (root/<split>/<label>/*), or the embedded "
        "subset cifar10_mini.",
    )
    flags.DEFINE_string("data_dir", None, "tfds data folder, or the root of an image folder.")
    flags.DEFINE_string("split", split, "Split name (any split folder of a folder dataset).")


def check_data_flags() -> None:
    """--dataset and --data_dir fit together; the folder exists."""
    f = FLAGS
    if f.dataset == "folder":
        check(f.data_dir, "--data_dir: required with --dataset=folder")
        check(os.path.isdir(f.data_dir), f"--data_dir={f.data_dir}: no such folder")
    check(
        f.dataset != "cifar10_mini" or f.data_dir is None,
        "--data_dir: not used with --dataset=cifar10_mini (it ships with the package)",
    )


def check_model_flag() -> None:
    """--model is given and exists."""
    check(FLAGS.model, "--model is required")
    check(os.path.exists(FLAGS.model), f"--model={FLAGS.model}: no such file")


def check_no_arguments(argv: list[str]) -> None:
    check(len(argv) == 1, f"unexpected arguments: {' '.join(argv[1:])}")


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input, reported in one line with exit code 2."""
    errors = [UsageError]
    # Modules that import TensorFlow are only consulted once the script has loaded them.
    for module, name in (("bats_tf.data", "DataError"), ("bats_tf.genotype", "GenotypeError")):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with malformed or unknown flags reported like other bad input.

    Use as ``app.run(cli.run(main), flags_parser=cli.parse_flags)``.
    """
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(USAGE_EXIT)


def run(main):
    """Wraps an absl ``main``: one line on stderr and exit 2 for bad input, 1 for a failed run."""

    def wrapped(argv):
        from absl import logging

        logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.WARNING)
        signal.signal(signal.SIGTERM, _terminated)  # unwinds like Ctrl-C: files stay whole
        try:
            return main(argv)
        except Interrupted as e:
            print(f"interrupted: {e}", file=sys.stderr)
            sys.exit(128 + e.signum)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(128 + signal.SIGINT)
        except (RunError, *user_errors()) as e:
            if FLAGS.verbose:
                traceback.print_exc()
            _quiet_tensorflow()
            print(f"error: {e}", file=sys.stderr)
            sys.exit(RUN_EXIT if isinstance(e, RunError) else USAGE_EXIT)

    return wrapped


def _terminated(signum, _frame):
    raise Interrupted("SIGTERM", signum)


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's clean-up warnings (e.g. of a failed restore) out of the error output."""
    if "tensorflow" in sys.modules and not FLAGS.verbose:
        sys.modules["tensorflow"].get_logger().setLevel("ERROR")


def check_writable_dir(path: str, flag: str = "--output_dir") -> None:
    """The folder exists or can be created, and is writable."""
    parent = path
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    target = parent or "."
    check(os.path.isdir(target), f"{flag}={path}: {target} is not a folder")
    check(os.access(target, os.W_OK), f"{flag}={path}: {target} is not writable")


def check_strategy(name: str) -> None:
    """Checks --strategy and, for multi_worker, the TF_CONFIG cluster (before TensorFlow starts)."""
    check(name in STRATEGIES, f"--strategy={name}: expected one of {', '.join(STRATEGIES)}")
    if name != "multi_worker" or not os.environ.get("TF_CONFIG"):
        return
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(
            f"TF_CONFIG: expected JSON with cluster and task (type, index) ({e!r})"
        ) from None
    check(
        0 <= index < len(hosts),
        f"TF_CONFIG: task {kind}:{index} is not in the cluster ({len(hosts)} {kind} tasks)",
    )


def is_chief(strategy: str) -> bool:
    """Whether this process writes the run's outputs: always, but for a multi-worker task
    other than the chief (the "chief" task, else worker 0) named by ``TF_CONFIG``."""
    if strategy != "multi_worker" or not os.environ.get("TF_CONFIG"):
        return True
    config = json.loads(os.environ["TF_CONFIG"])  # checked by check_strategy
    task = config["task"]
    chief = "chief" if "chief" in config["cluster"] else "worker"
    return (task["type"], int(task["index"])) == (chief, 0)


def make_strategy(name: str):
    """A ``tf.distribute`` strategy by name: default, mirrored, multi_worker, tpu.

    ``mirrored`` uses every GPU, or every logical CPU device when there is no GPU.
    ``multi_worker`` reads the cluster from ``TF_CONFIG`` and must be made before TensorFlow
    runs anything. A process makes each strategy once and gets it back on later calls (two
    multi-worker strategies in one process deadlock each other's collectives).
    """
    import tensorflow as tf

    check_strategy(name)
    return tf.distribute.get_strategy() if name == "default" else _distributed(name)


@functools.cache
def _distributed(name: str):
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise UsageError(f"--strategy=tpu: no TPU found ({e})") from None
    return tf.distribute.TPUStrategy(resolver)
