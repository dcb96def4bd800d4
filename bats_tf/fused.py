"""Fast supernet cells for the BATS space: all edges leaving one state in a few large ops.

The reference supernet builds every op of every edge from :mod:`bats_tf.ops` layers, about
150 small TensorFlow ops per edge, so a search step on CPU is bound by per-op overhead and
is slow to trace. Within a cell, every edge leaving a state ``h`` sees the same input,
so :class:`FusedStateEdges` computes all of them at once:

* one batch normalisation of ``h``; for each conv type one affine and one binarization
  over the inputs of all edges, stacked on channels;
* for each conv type one grouped convolution with ``edges * groups`` groups (edge ``e``
  owns output channels ``e*C:(e+1)*C``, exactly its own grouped conv);
* one channel shuffle of the weighted sum;
* pooling and its parameter-free BatchNorm once, shared by all edges.

Tensors keep edges and channels on the last axis, so every broadcast runs along it
(TensorFlow's fast path; 5-D broadcasts and middle-axis sums were slower).

It computes the same function as the reference ops in training mode (the search never
runs in inference mode); ``tests/test_fused.py`` checks it with copied weights. Kernel
sizes, dilations, pool types and the factorized reduce come from
:data:`bats_tf.op_specs.OP_SPECS`, as for the reference ops; the paddings computed from
them are the arguments of the native kernels, which hold no op parameters of their own.
"""

from __future__ import annotations

import dataclasses

import larq as lq
import numpy as np
import tensorflow as tf

import bats_tf  # noqa: F401
from bats_tf import fused_kernels, macro, op_specs, ops, precision
from bats_tf.op_specs import (
    BN_EPSILON,
    PRELU_INIT,
    same_offset,
    same_padding,
    spec_of,
    subsampled_offset,
)

FUSED_KINDS = ("none", "skip", "pool", "group_conv")  # the op kinds a fused cell computes


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
    return (x - mean) * tf.math.rsqrt(var + BN_EPSILON)


@ops.serializable
class FusedStateEdges(tf.keras.layers.Layer):
    """The mixed edges ``edges`` that leave one state: a list of ``(B, H', W', C)`` outputs."""

    def __init__(self, channels, stride, primitives, edges, op_config_fields, impl="tf", **kwargs):
        super().__init__(**kwargs)
        if impl not in ("native", "tf"):
            raise ValueError(f"impl must be 'native' or 'tf', not {impl!r}")
        self.impl = impl
        self.specs = {p: spec_of(p) for p in primitives}
        unknown = [p for p, spec in self.specs.items() if spec.kind not in FUSED_KINDS]
        if unknown:
            raise ValueError(f"ops {sorted(unknown)} cannot be fused")
        self.channels, self.stride = channels, stride
        self.primitives, self.edges = list(primitives), list(edges)
        self.op_config_fields = dict(op_config_fields)
        self.op_config = ops.OpConfig(**op_config_fields)
        self.convs = self._of_kind("group_conv")
        self.conv_idx = [self.primitives.index(p) for p in self.convs]
        binary = self.op_config.binary_activations and self.op_config.binary_weights
        self.bfloat16 = [  # as ops.GroupedQuantConv2D
            self.op_config.precision == "bfloat16"
            and binary
            and precision.gradients_agree(self.specs[p].kernel, self.specs[p].dilation, stride)
            for p in self.convs
        ]
        self.skip = (self._of_kind("skip") or [None])[0]
        self.has_skip = self.skip is not None
        self.pools = self._of_kind("pool")
        self.free = self._free_terms()

    def _of_kind(self, kind):
        return [p for p in self.primitives if self.specs[p].kind == kind]

    def build(self, input_shape):
        c, g, k, e = self.channels, self.op_config.groups, len(self.convs), len(self.edges)
        op_config = self.op_config
        clip = lq.constraints.WeightClip(1.0) if op_config.binary_weights else None
        if k:
            self.gamma = self.add_weight("gamma", (e, k, c), initializer="ones")
            self.beta = self.add_weight("beta", (e, k, c), initializer="zeros")
            self.kernels = [
                self.add_weight(
                    f"kernel_{p}",
                    (self.specs[p].kernel, self.specs[p].kernel, c // g, e * c),
                    initializer="glorot_normal",
                    constraint=clip,
                )
                for p in self.convs
            ]
            if op_config.scaling:
                init = [ops.scale_init(self.specs[p].kernel, c // g, op_config) for p in self.convs]
                init = tf.constant_initializer([[[v] * c for v in init] for _ in range(e)])
                self.scale = self.add_weight("scale", (e, k, c), initializer=init)
            self.alpha = self.add_weight(
                "prelu", (e, k, c), initializer=tf.constant_initializer(PRELU_INIT)
            )
        if self.stride > 1 and self.has_skip:
            c_in, r = input_shape[0][-1], op_specs.REDUCE_KERNEL
            first, second = op_specs.reduce_channels(c)
            self.fr1 = self.add_weight("fr1", (r, r, c_in, e * first))
            self.fr2 = self.add_weight("fr2", (r, r, c_in, e * second))
            self.fr_gamma = self.add_weight("fr_gamma", (e, c), initializer="ones")
            self.fr_beta = self.add_weight("fr_beta", (e, c), initializer="zeros")

    def _free_terms(self):
        """``(ops, T)`` map from an edge's op weights to the weights of its parameter-free
        terms: each pool, then (at stride 1) the identity, which carries the skip op and the
        shortcut of every conv op."""
        cols = [[float(p == q) for p in self.primitives] for q in self.pools]
        if self.stride == 1:
            shortcut = self.op_config.shortcut
            cols.append(
                [float(p == self.skip or (shortcut and p in self.convs)) for p in self.primitives]
            )
        cols = [col for col in cols if any(col)]
        return np.array(cols, np.float32).T if cols else None

    def _per_channel(self, w):
        """``(..., E)`` edge weights as ``(..., E*C)``: each over its edge's channels.

        (``tf.repeat`` does the same with ~30 graph ops per call.)
        """
        shape = [*w.shape, self.channels]
        return tf.reshape(tf.broadcast_to(w[..., None], shape), [*w.shape[:-1], -1])

    @staticmethod
    def _per_conv(v):
        """``(E, K, C)`` per-edge, per-conv values as ``(K, E*C)``: a row over the edges'
        channels for each conv type."""
        return tf.reshape(tf.transpose(v, [1, 0, 2]), [v.shape[1], -1])

    def _conv_sum(self, x, wc, free, free_w):
        """``sum_k wc[:, k] * conv_op_k(x)`` for all edges plus the ``free`` terms, each
        ``(B, H', W', C)`` weighted by a row of ``free_w`` ``(F, E*C)``: ``(B, H', W', E*C)``.

        Each conv type is one grouped convolution over its edges stacked on channels (edge
        ``e`` owns output channels ``e*C:(e+1)*C``) with the learned scale folded into the
        (binary) kernel; the channel shuffle, the same for every op, acts once on the
        weighted sum. Tensors hold one conv type at a time: stacking all conv types as well
        (``K*E*C`` channels) left fewer ops but outgrew the cache and ran slower. With
        ``impl="native"`` the chains before and after the convolutions run as
        :mod:`bats_tf.fused_kernels`; with ``"tf"`` as TensorFlow ops.
        """
        op_config, s, c, n_e, g = (
            self.op_config,
            self.stride,
            self.channels,
            len(self.edges),
            self.op_config.groups,
        )
        native = self.impl == "native"
        xn = normalize(x)
        subs, tiled = {None: xn}, {}  # inputs and tiled inputs (tf) by subsampling grid
        gammas, betas, alphas = (self._per_conv(v) for v in (self.gamma, self.beta, self.alpha))
        gammas, betas = tf.unstack(gammas), tf.unstack(betas)
        scales = tf.unstack(self._per_conv(self.scale)) if op_config.scaling else None
        weights = self._per_channel(tf.transpose(wc))  # mixing weights (K, E*C)
        ys = []
        for i, p in enumerate(self.convs):
            size, dil = self.specs[p].kernel, self.specs[p].dilation
            key, conv_stride, grid = None, s, None
            if dil > 1 and s > 1:
                # As ops.strided_conv: TensorFlow's convs cannot combine stride and dilation.
                # A conv of dilation dil/s at stride 1 on every s-th pixel when that is the
                # same function (s*s times fewer multiplications), else a conv at stride 1
                # whose output is subsampled; both on the grid of the strided conv.
                cheap = [subsampled_offset(n, size, s, dil) for n in x.shape[1:3]]
                if None not in cheap:
                    key, dil, conv_stride = tuple(cheap), dil // s, 1
                    if key not in subs:
                        subs[key] = xn[:, key[0] :: s, key[1] :: s, :]
                else:
                    conv_stride = 1
                    grid = [same_offset(n, size, s, dil) for n in x.shape[1:3]]
            src = subs[key]
            pads = [same_padding(src.shape[a], size, conv_stride, dil) for a in (1, 2)]
            if native:
                z = fused_kernels.affine_sign(
                    src,
                    gammas[i],
                    betas[i],
                    pads,
                    op_config.pad_value,
                    op_config.binary_activations,
                )
            else:
                if key not in tiled:
                    tiled[key] = tf.tile(src, [1, 1, 1, n_e])  # (B, H', W', E*C)
                z = tiled[key] * gammas[i] + betas[i]
                if op_config.binary_activations:
                    z = lq.quantizers.ste_sign(z)
                z = tf.pad(z, [[0, 0], *pads, [0, 0]], constant_values=op_config.pad_value)
            kernel = self.kernels[i]
            if op_config.binary_weights:
                kernel = lq.quantizers.ste_sign(kernel)
            if self.bfloat16[i]:  # +-1 operands: exact in bfloat16, the scale after
                y = precision.binary_conv2d(z, kernel, conv_stride, "VALID", dil)
                y = y * scales[i] if op_config.scaling else y
            else:
                if op_config.scaling:
                    kernel = kernel * scales[i]
                y = tf.nn.conv2d(z, kernel, conv_stride, "VALID", dilations=dil)
            ys.append(y if grid is None else y[:, grid[0] :: s, grid[1] :: s, :])
        if native:
            return fused_kernels.prelu_mix(ys, alphas, weights, n_e, g, free, free_w)
        alphas, weights = tf.unstack(alphas), tf.unstack(weights)
        # PReLU, mixing weight
        y = tf.add_n([tf.where(y > 0.0, y, y * a) * w for y, a, w in zip(ys, alphas, weights)])
        h, w = y.shape[1], y.shape[2]
        if g > 1:  # the channel shuffle of every edge's ops
            y = tf.reshape(y, [-1, h, w, n_e, g, c // g])
            y = tf.transpose(y, [0, 1, 2, 3, 5, 4])
        y = tf.reshape(y, [-1, h, w, n_e * c])
        return tf.add_n([y, *self._tiled_terms(free, free_w)])

    def _tiled_terms(self, free, free_w):
        """Each free term ``(B, H', W', C)`` on every edge, times its weights."""
        if not free:
            return []
        n_e = len(self.edges)
        return [tf.tile(f, [1, 1, 1, n_e]) * wt for f, wt in zip(free, tf.unstack(free_w))]

    def _reduce(self, x):
        """Per-edge factorized reduce, ``(B, H/2, W/2, E*C)``."""
        n_e, c = len(self.edges), self.channels
        s, o = op_specs.REDUCE_STRIDE, op_specs.REDUCE_OFFSET
        first, second = op_specs.reduce_channels(c)
        a = tf.nn.conv2d(x, self.fr1, s, "SAME")
        b = tf.nn.conv2d(x[:, o:, o:, :], self.fr2, s, "SAME")
        h, w = a.shape[1], a.shape[2]
        a = tf.reshape(a, [-1, h, w, n_e, first])
        b = tf.reshape(b, [-1, h, w, n_e, second])
        y = normalize(tf.reshape(tf.concat([a, b], -1), [-1, h, w, n_e * c]))
        return y * tf.reshape(self.fr_gamma, [-1]) + tf.reshape(self.fr_beta, [-1])

    def call(self, inputs):
        x, weights = inputs
        w = tf.gather(weights[0], self.edges)  # (E, ops)
        op_config, s, n_e = self.op_config, self.stride, len(self.edges)
        free, free_w = [], None  # pools and identity, each weighted per edge
        if self.free is not None:
            if self.pools:
                pools = {"max": tf.nn.max_pool2d, "avg": tf.nn.avg_pool2d}
                specs = [self.specs[p] for p in self.pools]
                y = [pools[spec.pool](x, spec.kernel, s, "SAME") for spec in specs]
                if op_config.pool_bn:  # one normalisation for all pools
                    y = tf.split(normalize(tf.concat(y, -1)), len(y), axis=-1)
                free += y
            if s == 1:
                free.append(x)
            free_w = self._per_channel(tf.transpose(tf.matmul(w, self.free)))  # (F, E*C)
        if self.convs:  # (B, H', W', E*C): edge e owns channels e*C:(e+1)*C
            total = self._conv_sum(x, tf.gather(w, self.conv_idx, axis=1), free, free_w)
        else:
            total = tf.add_n(self._tiled_terms(free, free_w))
        if s > 1 and self.has_skip:
            skip = self.primitives.index(self.skip)
            total += self._reduce(x) * self._per_channel(w[:, skip])
        return tf.split(total, n_e, axis=-1) if n_e > 1 else [total]

    def get_config(self):
        return {
            **super().get_config(),
            "channels": self.channels,
            "stride": self.stride,
            "primitives": self.primitives,
            "edges": self.edges,
            "op_config_fields": self.op_config_fields,
            "impl": self.impl,
        }


def edge_index(node: int, inp: int) -> int:
    """Row of edge ``inp -> node`` in a cell's mixing weights."""
    return sum(2 + m for m in range(node)) + inp


def fused_cell_nodes(
    states, weights, channels, reduction, nodes, primitives, op_config, name, impl="tf"
):
    """The intermediate nodes of a search cell built from :class:`FusedStateEdges`.

    States are consumed in order, so node ``i`` is complete before it feeds later nodes.
    """
    op_config_fields = dataclasses.asdict(op_config)
    states = list(states)
    pending = [[] for _ in range(nodes)]  # terms of each node
    for j in range(nodes + 1):
        if j >= 2:
            states.append(tf.keras.layers.Add(name=f"{name}_n{j - 2}")(pending[j - 2]))
        targets = list(range(max(0, j - 1), nodes))
        if not targets:
            continue
        stride = macro.edge_stride(reduction, j)
        layer = FusedStateEdges(
            channels,
            stride,
            primitives,
            [edge_index(i, j) for i in targets],
            op_config_fields,
            impl,
            name=f"{name}_s{j}",
        )
        for i, out in zip(targets, layer([states[j], weights])):
            pending[i].append(out)
    states.append(tf.keras.layers.Add(name=f"{name}_n{nodes - 1}")(pending[nodes - 1]))
    return states[2:]
