"""The search supernet: forward/backward through model weights and alphas, temperature."""

import bats_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bats_tf import fused, ops, supernet
from bats_tf.search_space import BATS_PRIMITIVES, DARTS_PRIMITIVES, num_edges

CLASSES, SIZE, C = 5, 16, 8
SMALL = dict(num_classes=CLASSES, image_size=SIZE, init_channels=C, layers=3)


def _batch(n=2, seed=0):
    rng = np.random.RandomState(seed)
    images = tf.constant(rng.randn(n, SIZE, SIZE, 3).astype("float32"))
    labels = tf.constant(rng.randint(0, CLASSES, n))
    return images, labels


@pytest.mark.parametrize("is_fused,nodes", [(True, 3), (False, 2)], ids=["fused", "reference"])
def test_bats_supernet_forward_and_backward(is_fused, nodes):
    cfg = ops.OpConfig(groups=2, pool_bn=True)
    model = supernet.build_supernet("bats", op_config=cfg, fused=is_fused, nodes=nodes, **SMALL)
    has_fused = any(isinstance(layer, fused.FusedStateEdges) for layer in model.layers)
    assert has_fused == is_fused
    assert [i.shape for i in model.inputs] == [
        (None, SIZE, SIZE, 3),
        (1, num_edges(nodes), len(BATS_PRIMITIVES)),
        (1, num_edges(nodes), len(BATS_PRIMITIVES)),
    ]

    arch = supernet.Architecture("bats", nodes, seed=1)
    arch.normal.assign(tf.random.stateless_normal(arch.normal.shape, seed=(1, 1)))
    arch.reduce.assign(tf.random.stateless_normal(arch.reduce.shape, seed=(2, 2)))
    images, labels = _batch()
    with tf.GradientTape() as tape:
        logits = model([images, *arch.mixing_weights()], training=True)
        loss = tf.reduce_mean(
            tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        )
    assert logits.shape == (2, CLASSES)
    assert np.all(np.isfinite(logits.numpy()))

    variables = model.trainable_variables
    assert variables
    grads, (g_normal, g_reduce) = tape.gradient(loss, [variables, arch.alphas])
    missing = [v.name for v, g in zip(variables, grads) if g is None]
    assert missing == []
    assert all(np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in grads)

    for g, alpha in ((g_normal, arch.normal), (g_reduce, arch.reduce)):
        assert g is not None and g.shape == alpha.shape
        assert np.all(np.isfinite(g.numpy()))
        assert np.any(np.abs(g.numpy()) > 0.0)
    # Every edge of both cell types reaches the loss.
    assert np.all(np.abs(g_normal.numpy()).sum(axis=1) > 0.0)
    assert np.all(np.abs(g_reduce.numpy()).sum(axis=1) > 0.0)


@pytest.mark.parametrize("space", ["darts", "darts_binary"])
def test_darts_supernets_build_and_give_logits(space):
    assert not supernet.can_fuse(space)
    model = supernet.build_supernet(space, nodes=1, **SMALL)
    assert not any(isinstance(layer, fused.FusedStateEdges) for layer in model.layers)
    dw = [layer for layer in model.layers if isinstance(layer, lq.layers.QuantDepthwiseConv2D)]
    assert dw
    binary = space == "darts_binary"
    assert all((layer.input_quantizer is not None) == binary for layer in dw)
    assert all((layer.depthwise_quantizer is not None) == binary for layer in dw)

    arch = supernet.Architecture(space, 1)
    assert arch.normal.shape == (num_edges(1), len(DARTS_PRIMITIVES))
    images, _ = _batch()
    logits = model([images, *arch.mixing_weights()], training=True)
    assert logits.shape == (2, CLASSES)
    assert np.all(np.isfinite(logits.numpy()))


def test_darts_space_cannot_be_fused():
    assert supernet.can_fuse("bats")
    with pytest.raises(ValueError, match="cannot be fused"):
        supernet.build_supernet("darts", fused=True, nodes=1, **SMALL)


def test_mixed_sum_weights_op_outputs_and_skips_none():
    rng = np.random.RandomState(0)
    weights = tf.constant(rng.rand(1, 3, 4).astype("float32"))
    outputs = [tf.constant(rng.randn(2, 4, 4, 3).astype("float32")) for _ in range(3)]
    layer = supernet.MixedSum(edge=2, op_indices=[1, 2, 3])
    got = layer([weights, *outputs]).numpy()
    w = weights.numpy()[0, 2]
    expected = sum(w[k] * y.numpy() for k, y in zip([1, 2, 3], outputs))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    clone = supernet.MixedSum.from_config(layer.get_config())
    assert (clone.edge, clone.op_indices) == (2, [1, 2, 3])


@pytest.mark.parametrize("space,nodes", [("bats", 2), ("bats", 4), ("darts", 3)])
def test_architecture_variables(space, nodes):
    arch = supernet.Architecture(space, nodes, seed=3)
    shape = (num_edges(nodes), 8)
    assert arch.normal.shape == arch.reduce.shape == shape
    assert not np.array_equal(arch.normal.numpy(), arch.reduce.numpy())
    # Seeded, small, and only the alphas are trainable (the temperature is not).
    again = supernet.Architecture(space, nodes, seed=3)
    np.testing.assert_array_equal(arch.normal.numpy(), again.normal.numpy())
    other = supernet.Architecture(space, nodes, seed=4)
    assert not np.array_equal(arch.normal.numpy(), other.normal.numpy())
    assert np.max(np.abs(arch.normal.numpy())) < 0.01
    trainable = {v.ref() for v in arch.trainable_variables}
    assert trainable == {arch.normal.ref(), arch.reduce.ref()}
    assert not arch.temperature.trainable


def test_mixing_weights_are_softmax_and_sharpen_with_temperature():
    arch = supernet.Architecture("bats", 3, temperature=1.0)
    rng = np.random.RandomState(0)
    alphas = [rng.randn(num_edges(3), 8).astype("float32") for _ in range(2)]
    arch.normal.assign(alphas[0])
    arch.reduce.assign(alphas[1])

    warm = [w.numpy() for w in arch.mixing_weights()]
    arch.temperature.assign(0.2)
    cold = [w.numpy() for w in arch.mixing_weights()]
    for a, w1, w2 in zip(alphas, warm, cold):
        assert w1.shape == w2.shape == (1, num_edges(3), 8)
        np.testing.assert_allclose(w1.sum(axis=-1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(w2.sum(axis=-1), 1.0, rtol=1e-5)
        assert np.all(w1 > 0.0) and np.all(w2 >= 0.0)
        np.testing.assert_allclose(w1[0], tf.nn.softmax(a).numpy(), rtol=1e-5)
        np.testing.assert_allclose(w2[0], tf.nn.softmax(a / 0.2).numpy(), rtol=1e-5)
        # Colder is sharper: each row's largest weight grows, and the argmax stays.
        assert np.all(w2.max(axis=-1) > w1.max(axis=-1))
        np.testing.assert_array_equal(w2.argmax(axis=-1), w1.argmax(axis=-1))
        np.testing.assert_array_equal(w1.argmax(axis=-1)[0], a.argmax(axis=-1))


@pytest.mark.parametrize(
    "schedule,progress,expected",
    [
        ("constant", 0.0, 1.0),
        ("constant", 0.5, 1.0),
        ("constant", 1.0, 1.0),
        ("constant", 2.0, 1.0),
        ("linear", 0.0, 1.0),
        ("linear", 0.5, 0.6),
        ("linear", 1.0, 0.2),
        ("linear", 0.25, 0.8),
        ("linear", -1.0, 1.0),
        ("linear", 3.0, 0.2),
        ("exponential", 0.0, 1.0),
        ("exponential", 0.5, math.sqrt(1.0 * 0.2)),
        ("exponential", 1.0, 0.2),
        ("exponential", -0.5, 1.0),
        ("exponential", 1.5, 0.2),
    ],
)
def test_temperature_at(schedule, progress, expected):
    assert supernet.temperature_at(progress, 1.0, 0.2, schedule) == pytest.approx(expected)


@pytest.mark.parametrize("t0,t1", [(5.0, 0.05), (0.5, 2.0)])
def test_exponential_temperature_midpoint_is_geometric_mean(t0, t1):
    assert supernet.temperature_at(0.5, t0, t1, "exponential") == pytest.approx(math.sqrt(t0 * t1))
    assert supernet.temperature_at(0.5, t0, t1, "linear") == pytest.approx((t0 + t1) / 2)
    # Monotone from t0 to t1.
    temps = [supernet.temperature_at(p, t0, t1, "exponential") for p in np.linspace(0, 1, 11)]
    assert temps[0] == pytest.approx(t0) and temps[-1] == pytest.approx(t1)
    steps = np.diff(temps)
    assert np.all(steps < 0) if t1 < t0 else np.all(steps > 0)


def test_unknown_temperature_schedule():
    with pytest.raises(ValueError, match="unknown temperature schedule 'cosine'"):
        supernet.temperature_at(0.5, 1.0, 0.2, "cosine")
