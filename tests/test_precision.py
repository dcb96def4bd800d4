"""bfloat16 binary convolutions: exact forward, close gradients, the precision setting."""

import bats_tf  # noqa: F401

# isort: split
import dataclasses
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from bats_tf import cpu, precision
from bats_tf.errors import ConfigError


def test_exact_chunks_keep_every_sum_within_bfloat16_integers():
    assert precision.exact_chunks(9, 16) == 1  # 144 terms
    assert precision.exact_chunks(9, 56) == 1  # 504: even sums up to 512
    assert precision.exact_chunks(9, 57) == 3  # 513 odd -> 3 x 171
    assert precision.exact_chunks(9, 128) == 4  # 1152 -> 4 x 288
    assert precision.exact_chunks(1, 512) == 1
    assert precision.exact_chunks(25, 64) == 4  # 1600 -> 4 x 400
    for taps, channels in [(9, 29), (9, 300), (25, 96), (1, 1000)]:
        n = precision.exact_chunks(taps, channels)
        fan_in = taps * channels // n
        assert channels % n == 0 and fan_in <= (512 if fan_in % 2 == 0 else 256)


def _signs(rng, *shape):
    return np.sign(rng.randn(*shape) + 1e-9).astype("float32")


@pytest.mark.parametrize(
    "size, channels, out, groups, kernel, dilation, stride",
    [
        (8, 16, 16, 1, 3, 1, 1),  # one chunk
        (8, 128, 32, 1, 3, 1, 1),  # 4 chunks
        (8, 96, 24, 2, 3, 1, 2),  # grouped, 48 channels per group (432 terms), strided
        (10, 192, 24, 2, 3, 2, 1),  # grouped and chunked, dilated
        (7, 64, 16, 1, 5, 1, 1),  # 5x5, odd size
    ],
)
def test_binary_conv_in_bfloat16_is_bit_identical_to_float32(
    size, channels, out, groups, kernel, dilation, stride
):
    rng = np.random.RandomState(0)
    x = _signs(rng, 2, size, size, channels)
    # Correlated signs: sums far from 0, beyond what bfloat16 holds without chunks.
    x[0] = 1.0
    w = _signs(rng, kernel, kernel, channels // groups, out)
    w[..., 0] = 1.0
    want = tf.nn.conv2d(x, w, stride, "SAME", dilations=dilation).numpy()
    got = precision.binary_conv2d(x, w, stride, "SAME", dilation).numpy()
    assert got.dtype == np.float32
    assert np.abs(want).max() > 256 or channels * kernel**2 // groups <= 256
    np.testing.assert_array_equal(got, want)


def test_unchunked_bfloat16_output_would_not_be_exact():
    """Why the chunks: a plain bfloat16 convolution rounds sums above 256."""
    x = np.ones((1, 3, 3, 128), "float32")
    w = np.ones((3, 3, 128, 1), "float32")
    w[0, 0, :3] = -1.0  # the centre sums 1152 - 6 = 1146, not a bfloat16
    plain = tf.nn.conv2d(tf.cast(x, tf.bfloat16), tf.cast(w, tf.bfloat16), 1, "VALID")
    assert float(plain[0, 0, 0, 0]) != 1146.0
    assert float(precision.binary_conv2d(x, w)[0, 0, 0, 0]) == 1146.0


def test_gradients_are_close_to_float32():
    rng = np.random.RandomState(1)
    x = tf.constant(_signs(rng, 2, 8, 8, 64))
    w = tf.constant(_signs(rng, 3, 3, 64, 16))
    probe = tf.constant(rng.randn(2, 8, 8, 16).astype("float32"))
    grads = []
    for conv in (tf.nn.conv2d, precision.binary_conv2d):
        with tf.GradientTape() as tape:
            tape.watch([x, w])
            loss = tf.reduce_sum(conv(x, w, 1, "SAME") * probe)
        grads.append(tape.gradient(loss, [x, w]))
    for got, want in zip(grads[1], grads[0]):
        assert got.dtype == tf.float32
        rel = np.linalg.norm(got - want) / np.linalg.norm(want)
        assert 0 < rel < 1e-2  # bfloat16 rounding of the incoming gradient: close, not equal
    assert precision.gradients_agree(3, 2, 2)


def test_precision_setting(monkeypatch):
    assert precision.resolve("float32") == "float32"
    assert precision.resolve("bfloat16") == "bfloat16"
    monkeypatch.setenv("BATS_PRECISION", "bfloat16")
    assert precision.resolve("auto") == "bfloat16"
    monkeypatch.setenv("BATS_PRECISION", "")
    amx = "amx_bf16" in cpu.flags()
    assert precision.resolve("auto") == ("bfloat16" if amx else "float32")
    with pytest.raises(ConfigError, match="^precision=half: expected one of"):
        precision.resolve("half")


def _same_weights(source, target):
    for a, b in zip(source.weights, target.weights):
        b.assign(a)


def test_a_binary_network_in_bfloat16_computes_the_same_logits():
    from bats_tf import network

    kw = dict(init_channels=16, layers=3, groups=1, activations="binary", weights="binary")
    nets = [
        network.build_network("bats_paper", 10, 16, precision=p, **kw)
        for p in ("float32", "bfloat16")
    ]
    convs = [
        layer
        for layer in network.flat_layers(nets[1])
        if getattr(layer, "bfloat16", False)  # binary inputs and kernel
    ]
    assert len(convs) >= 8
    _same_weights(*nets)
    rng = np.random.RandomState(2)
    for layer in network.flat_layers(nets[0]):  # BN statistics away from their start
        for w in layer.weights:
            if "moving" in w.name:
                w.assign(w + rng.uniform(0.1, 0.5, w.shape).astype("float32"))
    _same_weights(*nets)
    x = tf.constant(rng.randn(4, 16, 16, 3).astype("float32"))
    for training in (False, True):
        want, got = (net(x, training=training).numpy() for net in nets)
        np.testing.assert_array_equal(got, want)


def test_a_binary_fused_supernet_in_bfloat16_stays_close():
    from bats_tf import ops, supernet

    outs = []
    for p in ("float32", "bfloat16"):
        tf.keras.utils.set_random_seed(0)
        config = ops.OpConfig(groups=2, precision=p)
        net = supernet.build_supernet("bats", 10, 16, 8, 3, 2, op_config=config, fused=True)
        arch = supernet.Architecture("bats", 2, 0)
        outs.append(net([tf.ones((2, 16, 16, 3)), *arch.mixing_weights()], training=True))
    # The scale moves after the convolution: float32 rounding apart, nothing more.
    np.testing.assert_allclose(outs[1].numpy(), outs[0].numpy(), rtol=1e-4, atol=1e-4)


@pytest.fixture
def probe_cache(tmp_path, monkeypatch):
    """An empty probe cache; ``gradients_agree`` forgets what this process has probed."""
    monkeypatch.setenv("BATS_TF_KERNEL_CACHE", str(tmp_path))
    precision.gradients_agree.cache_clear()
    yield tmp_path
    precision.gradients_agree.cache_clear()


def test_the_gradient_probe_is_kept_per_machine(probe_cache):
    path = precision.probe_path()
    assert os.path.dirname(path) == str(probe_cache) and not os.path.exists(path)
    assert precision.gradients_agree(3, 1, 1)
    with open(path) as f:
        assert json.load(f) == {"3,1,1": True}
    with open(path, "w") as f:  # a kept answer decides, without probing again
        json.dump({"3,1,1": True, "5,1,2": False}, f)
    precision.gradients_agree.cache_clear()
    assert not precision.gradients_agree(5, 1, 2)
    with open(path, "w") as f:  # an unreadable file: probe again, rewrite it
        f.write("{not json")
    precision.gradients_agree.cache_clear()
    assert precision.gradients_agree(5, 1, 2)
    with open(path) as f:
        assert json.load(f) == {"5,1,2": True}


def test_the_gradient_probe_runs_without_a_writable_cache(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("BATS_TF_KERNEL_CACHE", str(tmp_path / "file" / "cache"))
    precision.gradients_agree.cache_clear()
    try:
        assert precision.gradients_agree(3, 1, 1)
    finally:
        precision.gradients_agree.cache_clear()


def test_a_convolution_whose_bfloat16_gradients_disagree_stays_float32(probe_cache):
    """Where the probe finds wrong gradients, that convolution runs in float32, the rest in
    bfloat16 (fused supernet and network alike)."""
    from bats_tf import fused, network, ops

    with open(precision.probe_path(), "w") as f:
        json.dump({"3,1,1": False, "5,1,1": True, "3,2,1": True, "5,2,1": True}, f)
    ops_ = ["group_conv_3x3", "group_conv_5x5", "dil_group_conv_3x3"]
    config = dataclasses.asdict(ops.OpConfig(precision="bfloat16"))
    layer = fused.FusedStateEdges(8, 1, ops_, [0, 1], config)
    assert layer.bfloat16 == [False, True, True]
    net = network.build_network(
        "bats_paper", 10, 16, init_channels=16, layers=3, groups=1, precision="bfloat16"
    )
    convs = [layer for layer in network.flat_layers(net) if hasattr(layer, "bfloat16")]
    by_kernel = {(c.kernel_size[0], c.dilation_rate[0], c.strides[0]): c.bfloat16 for c in convs}
    assert by_kernel[(3, 1, 1)] is False and by_kernel[(5, 1, 1)] is True
