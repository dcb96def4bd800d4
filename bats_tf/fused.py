"""Fast supernet cells for the BATS space: all edges leaving one state in a few large ops.

The reference supernet builds every op of every edge from :mod:`bats_tf.ops` layers, about
150 small TensorFlow ops per edge, so a search step on CPU is bound by per-op overhead and
takes minutes to trace. Within a cell, every edge leaving a state ``h`` sees the same input,
so :class:`FusedStateEdges` computes all of them at once:

* one batch normalisation of ``h``; the per-op, per-edge affine is a broadcast;
* one binarization; for each conv type one grouped convolution with ``edges * groups``
  groups (edge ``e`` owns output channels ``e*C:(e+1)*C``, exactly its own grouped conv);
* one scale, PReLU and channel shuffle over the stacked outputs;
* pooling and its parameter-free BatchNorm once, shared by all edges;
* the weighted sums as one contraction.

It computes the same function as the reference ops in training mode (the search never
runs in inference mode); ``tests/test_fused.py`` checks it with copied weights.
"""

from __future__ import annotations

import dataclasses

import larq as lq
import tensorflow as tf

import bats_tf  # noqa: F401
from bats_tf import ops

EPS = 1e-5
CONV_SPECS = {
    "group_conv_3x3": (3, 1),
    "group_conv_5x5": (5, 1),
    "dil_group_conv_3x3": (3, 2),
    "dil_group_conv_5x5": (5, 2),
}
FUSABLE = set(CONV_SPECS) | {"none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"}


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding of a "same" convolution, as TensorFlow and Larq compute it."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def normalize(x, axes=(0, 1, 2)):
    """Batch normalisation with batch statistics and no affine.

    Within ``strategy.run`` on several replicas, the statistics are those of the global batch.
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        mean, var = tf.nn.moments(x, list(axes), keepdims=True)
    else:
        count = tf.cast(tf.reduce_prod(tf.gather(tf.shape(x), list(axes))), x.dtype)
        local = [count, tf.reduce_sum(x, axes, keepdims=True)]
        local.append(tf.reduce_sum(tf.square(x), axes, keepdims=True))
        count, total, squares = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
        mean = total / count
        var = tf.maximum(squares / count - tf.square(mean), 0.0)
    return (x - mean) * tf.math.rsqrt(var + EPS)


@ops.serializable
class FusedStateEdges(tf.keras.layers.Layer):
    """The mixed edges ``edges`` that leave one state, as a ``(B, H, W, len(edges), C)`` tensor."""

    def __init__(self, channels, stride, primitives, edges, cfg_dict, **kwargs):
        super().__init__(**kwargs)
        unknown = set(primitives) - FUSABLE
        if unknown:
            raise ValueError(f"ops {sorted(unknown)} cannot be fused")
        self.channels, self.stride = channels, stride
        self.primitives, self.edges = list(primitives), list(edges)
        self.cfg_dict = dict(cfg_dict)
        self.cfg = ops.OpConfig(**cfg_dict)
        self.convs = [p for p in self.primitives if p in CONV_SPECS]
        self.conv_idx = [self.primitives.index(p) for p in self.convs]
        self.has_skip = "skip_connect" in self.primitives

    def build(self, input_shape):
        c, g, k, e = self.channels, self.cfg.groups, len(self.convs), len(self.edges)
        clip = lq.constraints.WeightClip(1.0) if self.cfg.binary_weights else None
        if k:
            self.gamma = self.add_weight("gamma", (e, k, c), initializer="ones")
            self.beta = self.add_weight("beta", (e, k, c), initializer="zeros")
            self.kernels = [
                self.add_weight(
                    f"kernel_{p}",
                    (CONV_SPECS[p][0], CONV_SPECS[p][0], c // g, e * c),
                    initializer="glorot_normal",
                    constraint=clip,
                )
                for p in self.convs
            ]
            if self.cfg.scaling:
                init = [ops.scale_init(CONV_SPECS[p][0], c // g, self.cfg) for p in self.convs]
                init = tf.constant_initializer([[[v] * c for v in init] for _ in range(e)])
                self.scale = self.add_weight("scale", (e, k, c), initializer=init)
            self.alpha = self.add_weight(
                "prelu", (e, k, c), initializer=tf.constant_initializer(0.25)
            )
        if self.stride > 1 and self.has_skip:
            c_in = input_shape[0][-1]
            self.fr1 = self.add_weight("fr1", (1, 1, c_in, e * (c // 2)))
            self.fr2 = self.add_weight("fr2", (1, 1, c_in, e * (c - c // 2)))
            self.fr_gamma = self.add_weight("fr_gamma", (e, c), initializer="ones")
            self.fr_beta = self.add_weight("fr_beta", (e, c), initializer="zeros")

    def _conv_sum(self, x, wc):
        """``sum_k wc[:, k] * conv_op_k(x)`` for all edges, shaped ``(B, H', W', E, C)``.

        Each conv type is one grouped convolution over the edges stacked on channels; the
        learned scale is folded into the (binary) kernel, and the channel shuffle, the same
        for every op, is applied once to the weighted sum.
        """
        cfg, s, c, n_e, g = self.cfg, self.stride, self.channels, len(self.edges), self.cfg.groups
        tiled = tf.tile(normalize(x), [1, 1, 1, n_e])  # (B, H, W, E*C)
        gamma = tf.reshape(tf.transpose(self.gamma, [1, 0, 2]), [len(self.convs), n_e * c])
        beta = tf.reshape(tf.transpose(self.beta, [1, 0, 2]), [len(self.convs), n_e * c])
        alpha = tf.reshape(tf.transpose(self.alpha, [1, 0, 2]), [len(self.convs), n_e * c])
        if cfg.scaling:
            scale = tf.reshape(tf.transpose(self.scale, [1, 0, 2]), [len(self.convs), n_e * c])
        weight = tf.repeat(tf.transpose(wc), c, axis=1)  # (K, E*C)
        terms = []
        for i, p in enumerate(self.convs):
            size, dil = CONV_SPECS[p]
            conv_stride = 1 if dil > 1 else s
            z = tiled * gamma[i] + beta[i]
            if cfg.binary_activations:
                z = lq.quantizers.ste_sign(z)
            pads = [same_padding(x.shape[a], size, conv_stride, dil) for a in (1, 2)]
            z = tf.pad(z, [[0, 0], *pads, [0, 0]], constant_values=cfg.pad_value)
            kernel = self.kernels[i]
            if cfg.binary_weights:
                kernel = lq.quantizers.ste_sign(kernel)
            if cfg.scaling:
                kernel = kernel * scale[i]
            y = tf.nn.conv2d(z, kernel, conv_stride, "VALID", dilations=dil)
            if dil > 1 and s > 1:
                y = y[:, ::s, ::s, :]
            y = tf.where(y > 0.0, y, y * alpha[i])
            terms.append(y * weight[i])
        y = tf.add_n(terms)
        h, w = y.shape[1], y.shape[2]
        if g > 1:
            y = tf.reshape(y, [-1, h, w, n_e, g, c // g])
            y = tf.transpose(y, [0, 1, 2, 3, 5, 4])
        return tf.reshape(y, [-1, h, w, n_e, c])

    def _reduce(self, x):
        """Per-edge factorized reduce ``(B, H/2, W/2, E, C)``."""
        n_e, c = len(self.edges), self.channels
        a = tf.nn.conv2d(x, self.fr1, 2, "VALID")
        b = tf.nn.conv2d(x[:, 1:, 1:, :], self.fr2, 2, "VALID")
        h, w = a.shape[1], a.shape[2]
        a = tf.reshape(a, [-1, h, w, n_e, c // 2])
        b = tf.reshape(b, [-1, h, w, n_e, c - c // 2])
        return normalize(tf.concat([a, b], -1)) * self.fr_gamma + self.fr_beta

    def call(self, inputs):
        x, weights = inputs
        w = tf.gather(weights[0], self.edges)  # (E, ops)
        cfg, s, idx = self.cfg, self.stride, self.primitives.index
        total, shared = 0.0, 0.0  # shared: per-edge weight of terms equal to x itself
        if self.convs:
            wc = tf.gather(w, self.conv_idx, axis=1)
            total = self._conv_sum(x, wc)
            if s == 1 and cfg.shortcut:
                shared = tf.reduce_sum(wc, axis=1)
        for p, pool in (("max_pool_3x3", tf.nn.max_pool2d), ("avg_pool_3x3", tf.nn.avg_pool2d)):
            if p in self.primitives:
                y = pool(x, 3, s, "SAME")
                y = normalize(y) if cfg.pool_bn else y
                total += y[..., None, :] * w[:, idx(p), None]
        if self.has_skip:
            if s == 1:
                shared += w[:, idx("skip_connect")]
            else:
                total += self._reduce(x) * w[:, idx("skip_connect"), None]
        if s == 1 and not isinstance(shared, float):
            total += x[..., None, :] * shared[:, None]
        return total

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "stride": self.stride,
            "primitives": self.primitives,
            "edges": self.edges,
            "cfg_dict": self.cfg_dict,
        }


def edge_index(node: int, inp: int) -> int:
    """Row of edge ``inp -> node`` in a cell's mixing weights."""
    return sum(2 + m for m in range(node)) + inp


def fused_cell_nodes(states, weights, channels, reduction, nodes, primitives, cfg, name):
    """The intermediate nodes of a search cell built from :class:`FusedStateEdges`.

    States are consumed in order, so node ``i`` is complete before it feeds later nodes.
    """
    cfg_dict = dataclasses.asdict(cfg)
    states = list(states)
    pending = [[] for _ in range(nodes)]  # terms of each node
    for j in range(nodes + 1):
        if j >= 2:
            states.append(tf.keras.layers.Add(name=f"{name}_n{j - 2}")(pending[j - 2]))
        targets = list(range(max(0, j - 1), nodes))
        if not targets:
            continue
        stride = 2 if reduction and j < 2 else 1
        layer = FusedStateEdges(
            channels,
            stride,
            primitives,
            [edge_index(i, j) for i in targets],
            cfg_dict,
            name=f"{name}_s{j}",
        )
        out = layer([states[j], weights])
        for t, i in enumerate(targets):
            pending[i].append(out[:, :, :, t, :])
    states.append(tf.keras.layers.Add(name=f"{name}_n{nodes - 1}")(pending[nodes - 1]))
    return states[2:]
