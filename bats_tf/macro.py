"""The macro structure the supernet and the final network share (DARTS); the cells' widths
are :mod:`bats_tf.widths`'s.

A real 3x3 stem, ``layers`` cells with reduction cells at 1/3 and 2/3 of the depth (each
doubles the width and halves the resolution at its inputs), a global pool and a real
classifier. Each cell preprocesses its two inputs to its width, reducing the older one when
the previous cell was a reduction.
"""

from __future__ import annotations

import tensorflow as tf

import bats_tf  # noqa: F401
from bats_tf import ops
from bats_tf.op_specs import BN_EPSILON, BN_MOMENTUM, REDUCE_STRIDE


def edge_stride(reduction: bool, state: int) -> int:
    """Stride of an edge leaving ``state``: a reduction cell downsamples its two inputs."""
    return REDUCE_STRIDE if reduction and state < 2 else 1


def cell_inputs(s0, s1, channels: int, reduction_prev: bool, op_config: ops.OpConfig, name: str):
    """The two inputs of a cell at its width: ``s0`` reduced if the previous cell reduced.

    # Arguments
        s0: output of the cell before the previous one.
        s1: output of the previous cell.
        channels: width of the cell.
        reduction_prev: whether the previous cell was a reduction (``s0`` is twice as large).
        op_config: how the ops are built.
        name: prefix of the layer names (the cell's name).
    """
    if reduction_prev:
        s0 = ops.factorized_reduce(s0, channels, op_config, f"{name}_pre0")
    else:
        s0 = ops.preprocess(s0, channels, op_config, f"{name}_pre0")
    return s0, ops.preprocess(s1, channels, op_config, f"{name}_pre1")


def conv_bn(x, filters: int, stride: int, name: str, relu_first: bool = False):
    """Real (ReLU ->) 3x3 conv -> BN."""
    if relu_first:
        x = tf.keras.layers.ReLU(name=f"{name}_relu")(x)
    x = tf.keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv"
    )(x)
    return tf.keras.layers.BatchNormalization(
        momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn"
    )(x)


def stem(x, channels: int, name: str = "stem"):
    """Real 3x3 conv + BN."""
    return conv_bn(x, channels, 1, name)


def classifier(x, num_classes: int, name: str = "classifier"):
    """Global average pool + real dense layer producing logits."""
    x = tf.keras.layers.GlobalAveragePooling2D(name=f"{name}_pool")(x)
    return tf.keras.layers.Dense(num_classes, name=f"{name}_dense")(x)
