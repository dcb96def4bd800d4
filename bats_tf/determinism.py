"""Bit-level repeatable runs (``deterministic=True`` of a search or a training)."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf

# No Grappler rewrite: several passes (the arithmetic optimizer and the remapper at least)
# rewrite a training step differently from one process to the next.
NO_REWRITES = {"disable_meta_optimizer": True}


def enable_determinism() -> None:
    """Deterministic TensorFlow ops, and no graph rewrite that reorders floating-point sums.

    Op determinism alone is not enough for a ``tf.function``: Grappler rewrites the same step
    differently from one process to the next, so one training step of one seed gave
    gradients up to 5% apart in two runs. Turning off the arithmetic optimizer and the
    remapper made most runs identical, not all; with no rewrite at all two runs are identical
    (``tests/test_determinism.py``).
    """
    tf.config.experimental.enable_op_determinism()
    tf.config.optimizer.set_experimental_options(NO_REWRITES)
