"""The fused supernet cells compute what the reference op layers compute."""

import bats_tf  # noqa: F401

# isort: split
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from bats_tf import fused, ops, supernet
from bats_tf.op_specs import OP_SPECS
from bats_tf.search_space import BATS_PRIMITIVES, Space, get_space, num_edges

C, G, NODES = 8, 2, 3
# The BATS ops but the factorized reduce, which needs even sizes at stride 2.
_NO_SKIP = tuple(p for p in BATS_PRIMITIVES if p != "skip_connect")
NO_SKIP = Space("bats", _NO_SKIP, tuple(OP_SPECS[p] for p in _NO_SKIP), True)


def _reference(x, weights, edges, stride, cfg, space):
    outs = [supernet.mixed_edge(x, weights, e, C, stride, space, cfg, f"e{e}") for e in edges]
    return tf.keras.Model([x, weights], tf.stack(outs, axis=3))


def _randomize(model, rng):
    for layer in model.layers:
        new = [v + rng.uniform(-0.5, 0.5, v.shape).astype("float32") for v in layer.get_weights()]
        layer.set_weights(new)


def _copy_to_fused(ref, layer, edges, stride, primitives):
    """Writes the reference op weights into the fused layer's stacked variables."""
    get = lambda name: ref.get_layer(name).get_weights()  # noqa: E731
    gamma, beta, scale, alpha = (
        v.numpy() for v in (layer.gamma, layer.beta, layer.scale, layer.alpha)
    )
    kernels = [k.numpy() for k in layer.kernels]
    for e, edge in enumerate(edges):
        for i, p in enumerate(layer.convs):
            name = f"e{edge}_{primitives.index(p)}"
            gamma[e, i], beta[e, i] = get(f"{name}_bn")[:2]
            kernels[i][..., e * C : (e + 1) * C] = get(f"{name}_conv")[0]
            scale[e, i] = get(f"{name}_scale")[0]
            alpha[e, i] = get(f"{name}_prelu")[0].reshape(-1)
        if stride > 1 and "skip_connect" in primitives:
            name = f"e{edge}_{primitives.index('skip_connect')}"
            h = C // 2
            layer.fr1[..., e * h : (e + 1) * h].assign(get(f"{name}_fr1")[0])
            layer.fr2[..., e * (C - h) : (e + 1) * (C - h)].assign(get(f"{name}_fr2")[0])
            layer.fr_gamma[e].assign(get(f"{name}_bn")[0])
            layer.fr_beta[e].assign(get(f"{name}_bn")[1])
    for var, value in zip(
        (layer.gamma, layer.beta, layer.scale, layer.alpha), (gamma, beta, scale, alpha)
    ):
        var.assign(value)
    for var, value in zip(layer.kernels, kernels):
        var.assign(value)


def check_fused_state_matches_reference(stride, binary, impl, size=(16, 16), space="bats"):
    """Builds the edges leaving state 0 both ways with the same weights, checks outputs and
    gradients agree and returns the fused layer."""
    rng = np.random.RandomState(0)
    space = get_space(space)
    primitives, ops_ = space.primitives, len(space.primitives)
    cfg = ops.OpConfig(groups=G, pool_bn=True, binary_activations=binary, binary_weights=binary)
    edges = [0, 2, 5]  # the edges leaving state 0 in a 3-node cell
    x_in = tf.keras.Input((*size, C))
    w_in = tf.keras.Input((num_edges(NODES), ops_), batch_size=1)
    ref = _reference(x_in, w_in, edges, stride, cfg, space)
    _randomize(ref, rng)
    layer = fused.FusedStateEdges(C, stride, primitives, edges, dataclasses.asdict(cfg), impl=impl)
    x = tf.constant(rng.randn(4, *size, C).astype("float32"))
    w = tf.nn.softmax(tf.constant(rng.randn(1, num_edges(NODES), ops_).astype("float32")))
    layer([x, w])
    _copy_to_fused(ref, layer, edges, stride, primitives)
    expected = ref([x, w], training=True).numpy()
    got = np.stack(layer([x, w]), axis=3)
    out = tuple(-(-n // stride) for n in size)
    assert got.shape == expected.shape == (4, *out, 3, C)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # The backward pass too: gradients of a random projection w.r.t. mixing weights and, when
    # real-valued, input (binary convs give integer sums, often exactly 0, where rounding of
    # the conv algorithm decides which side of PReLU's kink the gradient takes).
    probe = tf.constant(rng.randn(*expected.shape).astype("float32"))
    grads = []
    for fn in (lambda: ref([x, w], training=True), lambda: tf.stack(layer([x, w]), axis=3)):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(fn() * probe)
        grads.append([g.numpy() for g in tape.gradient(loss, [w, x][: 1 if binary else 2])])
    for want, have in zip(*grads):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(have, want, rtol=1e-3, atol=1e-3)
    return layer


@pytest.mark.parametrize("impl", ["native", "tf"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("binary", [True, False])
def test_fused_state_matches_reference_ops(stride, binary, impl):
    check_fused_state_matches_reference(stride, binary, impl)


@pytest.mark.parametrize("impl", ["native", "tf"])
@pytest.mark.parametrize("size", [(15, 15), (15, 16)], ids=["15x15", "15x16"])
def test_fused_state_matches_reference_ops_at_odd_sizes(size, impl):
    """At stride 2 the fused dilated convs sample the reference ops' grid at odd sizes too."""
    layer = check_fused_state_matches_reference(2, True, impl, size, NO_SKIP)
    assert any(layer.specs[p].dilation > 1 for p in layer.convs)


def test_fused_supernet_has_same_shapes_and_fewer_layers():
    kw = dict(num_classes=10, image_size=16, init_channels=C, layers=3, nodes=NODES)
    cfg = ops.OpConfig(groups=G, pool_bn=True)
    fast = supernet.build_supernet("bats", op_config=cfg, fused=True, **kw)
    slow = supernet.build_supernet("bats", op_config=cfg, fused=False, **kw)
    assert fast.output_shape == slow.output_shape == (None, 10)
    assert len(fast.layers) * 5 < len(slow.layers)
    # The same parameters, stacked differently (moving statistics of BN aside).
    count = lambda m: sum(int(np.prod(v.shape)) for v in m.trainable_variables)  # noqa: E731
    assert count(fast) == count(slow)
