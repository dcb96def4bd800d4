"""What every script shares: clear one-line errors, exit codes, strategies, output folders."""

from __future__ import annotations

import os
import sys
import traceback

from absl import flags

FLAGS = flags.FLAGS
flags.DEFINE_bool("verbose", False, "Show tracebacks of errors.")

USAGE_EXIT = 2


class UsageError(ValueError):
    """A flag, file or folder given by the user is wrong; the message names it."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise UsageError(message)


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input, reported in one line with exit code 2."""
    from bats_tf.data import DataError
    from bats_tf.genotype import GenotypeError

    return (UsageError, DataError, GenotypeError)


def run(main):
    """Wraps an absl ``main``: bad input gives one line on stderr and exit 2."""

    def wrapped(argv):
        from absl import logging

        logging.set_verbosity(logging.INFO if FLAGS.verbose else logging.WARNING)
        try:
            return main(argv)
        except user_errors() as e:
            if FLAGS.verbose:
                traceback.print_exc()
            print(f"error: {e}", file=sys.stderr)
            sys.exit(USAGE_EXIT)

    return wrapped


def check_writable_dir(path: str, flag: str = "--output_dir") -> None:
    """The folder exists or can be created, and is writable."""
    parent = path
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    target = parent or "."
    check(os.path.isdir(target), f"{flag}={path}: {target} is not a folder")
    check(os.access(target, os.W_OK), f"{flag}={path}: {target} is not writable")


def make_strategy(name: str):
    """A ``tf.distribute`` strategy by name: default, mirrored, multi_worker, tpu."""
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise UsageError(f"--strategy={name}: expected default, mirrored, multi_worker or tpu")
