"""Bit-level repeatable runs (``deterministic=True`` of a search or a training)."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf

# Grappler passes whose rewrite of a training step differs from one process to the next.
UNSTABLE_REWRITES = {"arithmetic_optimization": False, "remapping": False}


def enable_determinism() -> None:
    """Deterministic TensorFlow ops, and no graph rewrite that reorders floating-point sums.

    Op determinism alone is not enough for a ``tf.function``: Grappler's arithmetic optimizer
    and remapper rewrite the same step differently from one process to the next, so one
    training step of one seed gave gradients up to 5% apart in two runs. Without those two
    passes two runs are identical (``tests/test_determinism.py``).
    """
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options(UNSTABLE_REWRITES)
