"""The search supernet: mixed ops, search cells, architecture variables and temperature.

The supernet is a functional Keras model with three inputs: the images and the mixing
weights of the normal and of the reduction cell, ``softmax(alpha / T)`` of shape
``(1, edges, ops)``. The architecture variables live outside the model
(:class:`Architecture`), so the weight step sees only model weights and the
architecture step only alphas.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import tensorflow as tf

import bats_tf  # noqa: F401
from bats_tf import fused_kernels as kernels
from bats_tf import macro, ops, widths
from bats_tf.fused import FUSED_KINDS, fused_cell_nodes
from bats_tf.search_config import STEM_MULTIPLIER, TEMPERATURE_SCHEDULES
from bats_tf.search_space import Space, get_space, num_edges


@ops.serializable
class MixedSum(tf.keras.layers.Layer):
    """Sum of op outputs weighted by row ``edge`` of the mixing weights.

    ``none`` contributes zeros, so it is left out of the sum; its weight still takes its
    share of the softmax.
    """

    def __init__(self, edge: int, op_indices, **kwargs):
        super().__init__(**kwargs)
        self.edge = edge
        self.op_indices = list(op_indices)

    def call(self, inputs):
        weights, outputs = inputs[0], inputs[1:]
        w = weights[0, self.edge]
        return tf.add_n([w[k] * y for k, y in zip(self.op_indices, outputs, strict=True)])

    def get_config(self):
        return {**super().get_config(), "edge": self.edge, "op_indices": self.op_indices}


def mixed_edge(h, weights, edge, channels, stride, space, op_config, name):
    """``sum_k w[edge, k] * op_k(h)`` over the primitives of ``space``, from the reference ops.

    # Arguments
        h: the edge's input state.
        weights: the cell's mixing weights ``(1, edges, ops)``.
        edge: row of this edge in ``weights``.
        channels: output channels.
        stride: 1, or 2 on the inputs of a reduction cell.
        space: the search space (or its name).
        op_config: how the ops are built.
        name: prefix of the layer names.
    """
    primitives = get_space(space).primitives
    indices = [k for k, op in enumerate(primitives) if op != "none"]
    outputs = [
        ops.apply_op(primitives[k], h, channels, stride, op_config, f"{name}_{k}") for k in indices
    ]
    return MixedSum(edge, indices, name=f"{name}_mix")([weights, *outputs])


def can_fuse(space: str | Space) -> bool:
    """Whether :mod:`bats_tf.fused` computes every op of ``space`` (a space or its name)."""
    return all(spec.kind in FUSED_KINDS for spec in get_space(space).specs)


def search_cell(
    s0,
    s1,
    weights,
    channels,
    reduction,
    reduction_prev,
    nodes,
    space,
    op_config,
    name,
    fused,
    impl="tf",
):
    """A DARTS cell whose every edge is a mixed op over the primitives of ``space``.

    # Arguments
        s0: output of the cell before the previous one.
        s1: output of the previous cell.
        weights: the cell type's mixing weights ``(1, edges, ops)``.
        channels: width of the cell.
        reduction: whether the cell halves the resolution.
        reduction_prev: whether the previous cell did.
        nodes: intermediate nodes.
        space: the search space (or its name).
        op_config: how the ops are built.
        name: prefix of the layer names.
        fused: build the edges leaving each state as one fused layer.
        impl: ``"native"`` or ``"tf"`` formulation of the fused layers.
    """
    space = get_space(space)
    s0, s1 = macro.cell_inputs(s0, s1, channels, reduction_prev, op_config, name)
    if fused:
        nodes_out = fused_cell_nodes(
            [s0, s1], weights, channels, reduction, nodes, space.primitives, op_config, name, impl
        )
        return tf.keras.layers.Concatenate(name=f"{name}_out")(nodes_out)
    states, edge = [s0, s1], 0
    for i in range(nodes):
        terms = []
        for j, h in enumerate(states):
            stride = macro.edge_stride(reduction, j)
            terms.append(
                mixed_edge(h, weights, edge, channels, stride, space, op_config, f"{name}_e{edge}")
            )
            edge += 1
        states.append(tf.keras.layers.Add(name=f"{name}_n{i}")(terms))
    return tf.keras.layers.Concatenate(name=f"{name}_out")(states[2:])


def build_supernet(
    space: str | Space,
    num_classes: int,
    image_size: int = 32,
    init_channels: int = 16,
    layers: int = 8,
    nodes: int = 4,
    stem_multiplier: int = STEM_MULTIPLIER,
    op_config: ops.OpConfig | None = None,
    deployable: bool = False,
    fused: bool | None = None,
    fused_kernels: str = "auto",
) -> tf.keras.Model:
    """The search network: inputs ``[images, normal_weights, reduce_weights]``, output logits.

    # Arguments
        space: the search space (or its name).
        num_classes: number of logits.
        image_size: height and width of the input images.
        init_channels: width of the first cells.
        layers: number of cells.
        nodes: intermediate nodes per cell.
        stem_multiplier: the stem has ``stem_multiplier * init_channels`` channels.
        op_config: how the ops are built (default: the space's precision, BN after pools).
        deployable: groups of each cell from its width (:func:`bats_tf.widths.cell_groups`),
            not ``op_config.groups``.
        fused: build the edges leaving each state as one
            :class:`~bats_tf.fused.FusedStateEdges` instead of separate op layers (default:
            whenever the space allows).
        fused_kernels: ``auto``, ``native`` or ``tf`` (:func:`bats_tf.fused_kernels.resolve`).
    """
    space = get_space(space)
    op_config = op_config or ops.OpConfig.for_space(space, pool_bn=True)
    fused = can_fuse(space) if fused is None else fused
    impl = kernels.resolve(fused_kernels) if fused else "tf"
    edges, n_ops = num_edges(nodes), len(space.primitives)
    images = tf.keras.Input((image_size, image_size, 3), name="images")
    # One row of mixing weights per replica: Keras divides an Input's batch size, taken as
    # global inside a tf.distribute scope, by the number of replicas.
    rows = tf.distribute.get_strategy().num_replicas_in_sync
    w_normal = tf.keras.Input((edges, n_ops), batch_size=rows, name="normal_weights")
    w_reduce = tf.keras.Input((edges, n_ops), batch_size=rows, name="reduce_weights")
    s0 = s1 = macro.stem(images, stem_multiplier * init_channels)
    reduction_prev = False
    plan = widths.cell_plan(layers, init_channels)
    groups = widths.cell_groups(layers, init_channels, op_config.groups, deployable)
    for i, ((channels, reduction), g) in enumerate(zip(plan, groups)):
        weights = w_reduce if reduction else w_normal
        cell = search_cell(
            s0,
            s1,
            weights,
            channels,
            reduction,
            reduction_prev,
            nodes,
            space,
            dataclasses.replace(op_config, groups=g),
            f"cell{i}",
            fused,
            impl,
        )
        s0, s1, reduction_prev = s1, cell, reduction
    logits = macro.classifier(s1, num_classes)
    return tf.keras.Model([images, w_normal, w_reduce], logits, name=f"supernet_{space.name}")


class Architecture(tf.Module):
    """The architecture variables (alphas of both cell types) and the temperature.

    # Arguments
        space: the search space (or its name).
        nodes: intermediate nodes per cell.
        seed: seed of the alphas' random initialisation.
        temperature: initial temperature.
    """

    def __init__(self, space: str | Space, nodes: int, seed: int = 0, temperature: float = 1.0):
        super().__init__(name="architecture")
        space = get_space(space)
        self.space, self.nodes = space.name, nodes
        self.primitives = space.primitives
        shape = (num_edges(nodes), len(self.primitives))
        rng = np.random.RandomState(seed)
        self.normal = tf.Variable(1e-3 * rng.randn(*shape).astype("float32"), name="alpha_normal")
        self.reduce = tf.Variable(1e-3 * rng.randn(*shape).astype("float32"), name="alpha_reduce")
        self.temperature = tf.Variable(float(temperature), trainable=False, name="temperature")

    @property
    def alphas(self) -> list[tf.Variable]:
        return [self.normal, self.reduce]

    def mixing_weights(self):
        """``softmax(alpha / T)`` of both cell types, each shaped ``(1, edges, ops)``."""
        t = self.temperature
        return [tf.nn.softmax(a / t, axis=-1)[None] for a in self.alphas]


def temperature_at(progress: float, t0: float, t1: float, schedule: str) -> float:
    """Temperature after ``progress`` (0..1) of the search: constant t0, or t0 -> t1."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return t0
    if schedule == "linear":
        return t0 + (t1 - t0) * p
    if schedule == "exponential":
        return t0 * math.exp(p * math.log(t1 / t0))
    raise ValueError(
        f"unknown temperature schedule '{schedule}' (expected {TEMPERATURE_SCHEDULES})"
    )
