"""The search-space ops: shapes, binarization, the grouped binary conv and the small layers."""

import bats_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bats_tf import op_specs, ops
from bats_tf.op_specs import OP_SPECS, OpSpec
from bats_tf.search_space import BATS_PRIMITIVES, DARTS_PRIMITIVES

C = 8
GROUP_OPS = ("group_conv_3x3", "group_conv_5x5", "dil_group_conv_3x3", "dil_group_conv_5x5")
# (op, groups): the BATS grouped convs at every group count, the other ops once.
SHAPE_CASES = [(op, g) for op in GROUP_OPS for g in (1, 2, 4)] + [
    (op, 4) for op in OP_SPECS if op not in GROUP_OPS and op != "none"
]


def _sign(x):
    """Larq's ``ste_sign`` forward: sign with sign(0) = +1."""
    return np.where(np.asarray(x) >= 0, 1.0, -1.0).astype("float32")


def _same_pads(size, kernel, stride, dilation):
    """TensorFlow's "same" padding (before, after) of one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _reference_grouped_conv(x, kernel, groups, stride, dilation, binary):
    """Per-group VALID convs of the padded (binarized) input on channel slices, concatenated."""
    k = kernel.shape[0]
    if binary:
        x, kernel = _sign(x), _sign(kernel)
    pads = [_same_pads(x.shape[a], k, stride, dilation) for a in (1, 2)]
    x = tf.pad(x, [[0, 0], *pads, [0, 0]], constant_values=1.0 if binary else 0.0)
    cin, cout = kernel.shape[2], kernel.shape[3] // groups
    outs = [
        tf.nn.conv2d(
            x[..., g * cin : (g + 1) * cin],
            kernel[..., g * cout : (g + 1) * cout],
            stride,
            "VALID",
            dilations=dilation,
        )
        for g in range(groups)
    ]
    return tf.concat(outs, axis=-1).numpy()


def _op_model(op, stride, cfg, channels_in=C, channels=C, size=8):
    h, w = (size, size) if isinstance(size, int) else size
    x = tf.keras.Input((h, w, channels_in))
    return tf.keras.Model(x, ops.apply_op(op, x, channels, stride, cfg, "op"))


def _binary_conv(groups, kernel=3, stride=1, dilation=1, binary=True):
    return ops.GroupedQuantConv2D(
        C,
        kernel,
        strides=stride,
        dilation_rate=dilation,
        groups=groups,
        padding="same",
        pad_values=1.0 if binary else 0.0,
        input_quantizer="ste_sign" if binary else None,
        kernel_quantizer="ste_sign" if binary else None,
        kernel_constraint="weight_clip" if binary else None,
        use_bias=False,
    )


def _record_conv_inputs(layer, monkeypatch):
    """Makes ``layer`` record the (input, kernel) its convolution op actually receives."""
    seen = []
    original = layer.convolution_op

    def convolution_op(inputs, kernel):
        seen.append((tf.convert_to_tensor(inputs).numpy(), tf.convert_to_tensor(kernel).numpy()))
        return original(inputs, kernel)

    monkeypatch.setattr(layer, "convolution_op", convolution_op)
    return seen


def test_op_tables_match_search_spaces():
    assert set(OP_SPECS) == set(BATS_PRIMITIVES) | set(DARTS_PRIMITIVES)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("op,groups", SHAPE_CASES)
def test_op_output_shape(op, groups, stride):
    cfg = ops.OpConfig(groups=groups, pool_bn=True)
    model = _op_model(op, stride, cfg)
    x = tf.random.stateless_normal((2, 8, 8, C), seed=(1, 2))
    y = model(x, training=True)
    assert y.shape == (2, 8 // stride, 8 // stride, C)
    assert np.all(np.isfinite(y.numpy()))


@pytest.mark.parametrize("op", ["sep_conv_3x3", "dil_conv_5x5", "skip_connect"])
def test_darts_op_output_shape_real_config(op):
    model = _op_model(op, 2, ops.OpConfig.for_space("darts"))
    assert model.output_shape == (None, 4, 4, C)


def test_conv_op_changes_channels():
    model = _op_model("group_conv_3x3", 1, ops.OpConfig(groups=2), channels_in=4, channels=8)
    assert model.output_shape == (None, 8, 8, 8)
    # No identity shortcut when the channel count changes.
    assert not any(layer.name == "op_add" for layer in model.layers)


@pytest.mark.parametrize(
    "stride,shortcut,has_add", [(1, True, True), (1, False, False), (2, True, False)]
)
def test_group_conv_shortcut(stride, shortcut, has_add):
    model = _op_model("group_conv_3x3", stride, ops.OpConfig(groups=2, shortcut=shortcut))
    assert any(layer.name == "op_add" for layer in model.layers) == has_add


def test_apply_op_unknown_op():
    x = tf.keras.Input((8, 8, C))
    for op in ("none", "conv_7x7"):
        with pytest.raises(ValueError, match=f"unknown op '{op}'"):
            ops.apply_op(op, x, C, 1, ops.OpConfig(), "op")


@pytest.mark.parametrize(
    "args,acts,weights",
    [
        (("bats",), True, True),
        (("bats", "binary", "binary"), True, True),
        (("bats", "binary", "real"), True, False),
        (("bats", "real", "real"), False, False),
        (("darts",), False, False),
        (("darts", "binary", "binary"), False, False),
        (("darts_binary",), True, True),
        (("darts_binary", "binary", "real"), True, False),
    ],
)
def test_config_for_space(args, acts, weights):
    cfg = ops.OpConfig.for_space(*args)
    assert (cfg.binary_activations, cfg.binary_weights) == (acts, weights)
    assert cfg.pad_value == (1.0 if acts else 0.0)


def test_config_for_unknown_space():
    with pytest.raises(KeyError, match="unknown search space 'nope'"):
        ops.OpConfig.for_space("nope")


@pytest.mark.parametrize(
    "weights,kernel_binary", [("binary", True), ("real", False)], ids=["binary", "real_weights"]
)
def test_group_conv_binarizes_inputs_and_kernel(weights, kernel_binary, monkeypatch):
    cfg = ops.OpConfig.for_space("bats", "binary", weights, groups=2)
    model = _op_model("group_conv_3x3", 1, cfg)
    layer = model.get_layer("op_conv")
    assert isinstance(layer, ops.GroupedQuantConv2D)
    assert layer.groups == 2 and layer.pad_values == 1.0
    # Kernel values away from +-1, so only a quantizer can make them +-1.
    layer.kernel.assign(0.3 * layer.kernel + 0.05)
    x = tf.random.stateless_normal((2, 8, 8, C), seed=(3, 4))

    # The BN output, then what the conv's input quantizer makes of it.
    bn = model.get_layer("op_bn")(x, training=True).numpy()
    assert not np.all(np.abs(bn) == 1.0)
    np.testing.assert_array_equal(np.abs(layer.input_quantizer(bn).numpy()), 1.0)

    # What the convolution op really receives (padded input and kernel) in a model call.
    seen = _record_conv_inputs(layer, monkeypatch)
    model(x, training=True)
    assert len(seen) == 1
    inputs, kernel = seen[0]
    assert inputs.shape == (2, 10, 10, C)  # padded by 1 on each side, with 1.0
    np.testing.assert_array_equal(np.abs(inputs), 1.0)
    np.testing.assert_array_equal(inputs[:, 0], 1.0)
    np.testing.assert_array_equal(inputs[:, 1:-1, 1:-1], _sign(bn))

    with lq.context.quantized_scope(True):
        scoped = tf.convert_to_tensor(layer.kernel).numpy()
    raw = layer.kernel.numpy()
    if kernel_binary:
        np.testing.assert_array_equal(scoped, _sign(raw))
        np.testing.assert_array_equal(kernel, _sign(raw))
    else:
        assert layer.kernel_quantizer is None
        np.testing.assert_array_equal(scoped, raw)
        np.testing.assert_array_equal(kernel, raw)
        assert not np.all(np.abs(kernel) == 1.0)


@pytest.mark.parametrize("space", ["darts", "bats_real"])
def test_real_config_does_not_binarize(space, monkeypatch):
    if space == "darts":
        cfg, op = ops.OpConfig.for_space("darts"), "sep_conv_3x3"
        conv_name = "op_pw0"
    else:
        cfg, op = ops.OpConfig.for_space("bats", "real", "real", groups=2), "group_conv_3x3"
        conv_name = "op_conv"
    model = _op_model(op, 1, cfg)
    quant_layers = [layer for layer in model.layers if isinstance(layer, lq.layers.QuantConv2D)]
    assert quant_layers
    for layer in quant_layers:
        assert layer.input_quantizer is None and layer.kernel_quantizer is None
    seen = _record_conv_inputs(model.get_layer(conv_name), monkeypatch)
    model(tf.random.stateless_normal((2, 8, 8, C), seed=(5, 6)), training=True)
    inputs, _ = seen[0]
    assert not np.all(np.abs(inputs) == 1.0)


# (kernel, dilation, stride): TensorFlow convolutions cannot combine dilation and stride.
CONV_CASES = [(3, 1, 1), (3, 1, 2), (5, 1, 1), (5, 1, 2), (3, 2, 1), (5, 2, 1)]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "real"])
@pytest.mark.parametrize("groups", [1, 2, 4])
@pytest.mark.parametrize("kernel,dilation,stride", CONV_CASES)
def test_grouped_conv_matches_per_group_reference(kernel, dilation, stride, groups, binary):
    rng = np.random.RandomState(kernel * 100 + dilation * 10 + stride + groups)
    layer = _binary_conv(groups, kernel, stride, dilation, binary)
    x = rng.randn(2, 7, 8, C).astype("float32")  # odd and even sizes: asymmetric padding
    got = layer(x).numpy()
    w = layer.kernel.numpy()
    assert w.shape == (kernel, kernel, C // groups, C)
    expected = _reference_grouped_conv(x, w, groups, stride, dilation, binary)
    assert got.shape == expected.shape == (2, -(-7 // stride), 8 // stride, C)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def _sampled_pixels(size):
    """The input pixels on which a 3x3 stride-2 "same" ``tf.nn.conv2d`` centres its outputs:
    a row-coded image (pixel p holds p + 1) through a kernel with only its centre tap."""
    x = tf.tile(tf.reshape(tf.range(1.0, size + 1.0), (1, size, 1, 1)), [1, 1, 2, 1])
    centre = np.zeros((3, 3, 1, 1), "float32")
    centre[1, 1] = 1.0
    return tf.nn.conv2d(x, centre, 2, "SAME").numpy()[0, :, 0, 0].astype(int) - 1


@pytest.mark.parametrize("size,first", [(8, 1), (16, 1), (7, 0), (15, 0), (2, 1), (1, 0)])
def test_same_conv_grid(size, first):
    """TensorFlow's stride-2 "same" grid: odd pixels at even sizes, even pixels at odd ones."""
    pixels = _sampled_pixels(size)
    np.testing.assert_array_equal(pixels, first + 2 * np.arange(-(-size // 2)))
    for kernel, dilation in ((3, 1), (5, 1), (3, 2), (5, 2), (3, 3)):
        assert op_specs.same_offset(size, kernel, 2, dilation) == first
    assert op_specs.same_offset(size, 1, 2) == 0  # a 1x1 conv (factorized reduce)


def _conv1d_same(x, w, stride, dilation, pad_value):
    """A 1-D "same" conv by its definition (TensorFlow's padding rule)."""
    before, after = _same_pads(len(x), len(w), stride, dilation)
    xp = np.concatenate([np.full(before, pad_value), x, np.full(after, pad_value)])
    out = -(-len(x) // stride)
    return np.array(
        [sum(w[t] * xp[stride * i + dilation * t] for t in range(len(w))) for i in range(out)]
    )


@pytest.mark.parametrize("stride", [2, 3])
def test_subsampled_conv_is_exact(stride):
    """A strided dilated conv equals the stride-1 conv subsampled on ``same_offset``, and,
    where ``subsampled_offset`` says so, the conv of dilation d/s on the subsampled input."""
    rng = np.random.RandomState(stride)
    for size in range(1, 14):
        for kernel in range(1, 7):
            for dilation in range(1, 3 * stride + 1):
                x, w = rng.randn(size), rng.randn(kernel)
                direct = _conv1d_same(x, w, stride, dilation, 1.0)
                full = _conv1d_same(x, w, 1, dilation, 1.0)
                grid = op_specs.same_offset(size, kernel, stride, dilation)
                np.testing.assert_allclose(full[grid::stride], direct, atol=1e-12)
                o = op_specs.subsampled_offset(size, kernel, stride, dilation)
                if dilation % stride:
                    assert o is None
                elif kernel % 2:
                    assert o is not None, (size, kernel, dilation)  # every odd kernel
                if o is not None:
                    cheap = _conv1d_same(x[o::stride], w, 1, dilation // stride, 1.0)
                    np.testing.assert_allclose(cheap, direct, atol=1e-12)
    assert op_specs.subsampled_offset(5, 4, 2, 2) is None  # some even kernels: no exact form


SIZES = [(8, 8), (7, 7), (7, 8)]
# The conv of each dilated op that reads the subsampled input.
DILATED = {
    "dil_group_conv_3x3": ("op_conv", "op_sub"),
    "dil_group_conv_5x5": ("op_conv", "op_sub"),
    "dil_conv_3x3": ("op_dw0", "op_0_sub"),
    "dil_conv_5x5": ("op_dw0", "op_0_sub"),
}


def spec_kind(op):
    return OP_SPECS[op].kind


def _space(op):
    """A binary space that has ``op``."""
    return "darts_binary" if spec_kind(op) in ("sep_conv", "dil_conv") else "bats"


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "real"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op", DILATED)
def test_strided_dilated_conv_runs_on_the_subsampled_input(op, size, binary):
    """At stride 2 a dilated op subsamples its input, then runs an undilated conv at stride 1:
    the full-resolution dilated conv subsampled on the stride-2 "same" grid."""
    precision = "binary" if binary else "real"
    cfg = ops.OpConfig.for_space(_space(op), precision, precision, groups=2)
    model = _op_model(op, 2, cfg, size=size)
    conv_name, sub_name = DILATED[op]
    conv, sub = model.get_layer(conv_name), model.get_layer(sub_name)
    assert isinstance(sub, ops.Subsample) and conv.inbound_nodes[0].inbound_layers is sub
    assert conv.strides == (1, 1) and conv.dilation_rate == (1, 1)

    x = np.random.RandomState(sum(size)).randn(2, *size, C).astype("float32")
    before, got = tf.keras.Model(model.input, [sub.input, conv.output])(x, training=False)
    config = {**conv.get_config(), "dilation_rate": (2, 2), "name": "full"}
    full = type(conv).from_config(config)
    full.build(before.shape)
    full.set_weights(conv.get_weights())
    rows, cols = _sampled_pixels(size[0]), _sampled_pixels(size[1])
    expected = full(before).numpy()[:, rows][:, :, cols]
    assert got.shape == expected.shape
    assert got.shape[1:3] == (-(-size[0] // 2), -(-size[1] // 2))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-4)


def _randomize(model, rng):
    """Random weights (positive BN variances) in every layer of ``model``."""
    for layer in model.layers:
        weights = [v + rng.uniform(-0.5, 0.5, v.shape).astype("float32") for v in layer.weights]
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            weights[-1] = rng.uniform(0.5, 1.5, weights[-1].shape).astype("float32")
        layer.set_weights(weights)


# Every op with a stride-2 form but the factorized reduce; (op, dilation) overrides the spec:
# dilation 3 has no subsampled form at stride 2, dilation 4 runs at dilation 2 subsampled.
GRID_CASES = [(op, None) for op in OP_SPECS if op not in ("none", "skip_connect")] + [
    ("dil_group_conv_3x3", 3),
    ("dil_group_conv_5x5", 4),
]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "real"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("op,dilation", GRID_CASES, ids=lambda v: str(v))
def test_every_op_at_stride_2_samples_the_same_grid(op, dilation, size, binary, monkeypatch):
    """Output (i, j) of every op at stride 2 is the same op's output at stride 1 (same weights)
    at the pixel a stride-2 "same" conv centres output (i, j) on.

    Separable convs run their second conv at the reduced resolution: compared after the first.
    """
    if dilation is not None:
        monkeypatch.setitem(OP_SPECS, op, OpSpec(spec_kind(op), OP_SPECS[op].kernel, dilation))
    precision = "binary" if binary else "real"
    cfg = ops.OpConfig.for_space(_space(op), precision, precision, groups=2, shortcut=False)
    strided, full = (_op_model(op, s, cfg, size=size) for s in (2, 1))
    _randomize(full, np.random.RandomState(len(op)))
    for layer in full.layers:
        if layer.weights:
            strided.get_layer(layer.name).set_weights(layer.get_weights())
    if spec_kind(op) == "sep_conv":
        strided, full = (
            tf.keras.Model(m.input, m.get_layer("op_bn0").output) for m in (strided, full)
        )
    x = np.random.RandomState(sum(size)).randn(2, *size, C).astype("float32")
    rows, cols = _sampled_pixels(size[0]), _sampled_pixels(size[1])
    expected = full(x, training=False).numpy()[:, rows][:, :, cols]
    got = strided(x, training=False).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_factorized_reduce_grids():
    """The factorized reduce concatenates the grids (2i, 2j) and (2i+1, 2j+1)."""
    cfg = ops.OpConfig.for_space("bats", groups=2)
    model = _op_model("skip_connect", 2, cfg)
    a = tf.keras.Model(model.input, model.get_layer("op_fr1").output)
    b = tf.keras.Model(model.input, model.get_layer("op_fr2").output)
    x = np.random.RandomState(3).randn(2, 8, 8, C).astype("float32")
    for part, first in ((a, 0), (b, 1)):
        kernel = part.layers[-1].kernel.numpy()[0, 0]
        expected = np.einsum("bhwc,cd->bhwd", x[:, first::2, first::2], kernel)
        np.testing.assert_allclose(part(x).numpy(), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_conv_gradient(groups):
    layer = _binary_conv(groups)
    rng = np.random.RandomState(groups)
    x = tf.constant(0.5 * rng.randn(2, 6, 6, C).astype("float32"))
    probe = tf.constant(rng.randn(2, 6, 6, C).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * probe)
    gx, gk = tape.gradient(loss, [x, layer.kernel])
    for g in (gx, gk):
        assert g is not None
        assert np.all(np.isfinite(g.numpy()))
        assert np.any(g.numpy() != 0.0)
    assert gk.shape == layer.kernel.shape


def _xla_compiled_calls(layer):
    """Ops of ``layer``'s traced graph that carry ``_XlaMustCompile`` (a jit-compiled call)."""
    fn = tf.function(lambda x: layer(x))
    graph = fn.get_concrete_function(tf.TensorSpec((1, 6, 6, C))).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return [n.op for n in nodes if "_XlaMustCompile" in n.attr]


def test_grouped_conv_does_not_use_xla():
    base = lq.layers.QuantConv2D._jit_compiled_convolution_op
    mine = ops.GroupedQuantConv2D._jit_compiled_convolution_op
    assert mine is not base
    assert not isinstance(mine, tf.types.experimental.PolymorphicFunction)
    assert _xla_compiled_calls(_binary_conv(2)) == []
    # The check can see the XLA path: plain QuantConv2D takes it for groups > 1.
    plain = lq.layers.QuantConv2D(C, 3, groups=2, padding="same", use_bias=False)
    assert _xla_compiled_calls(plain) != []


@pytest.mark.parametrize(
    "groups,channels,order",
    [
        (2, 4, [0, 2, 1, 3]),
        (2, 6, [0, 3, 1, 4, 2, 5]),
        (3, 6, [0, 2, 4, 1, 3, 5]),
        (4, 8, [0, 2, 4, 6, 1, 3, 5, 7]),
        (1, 4, [0, 1, 2, 3]),
    ],
)
def test_channel_shuffle_order(groups, channels, order):
    x = tf.reshape(tf.range(2 * 3 * channels, dtype=tf.float32), (1, 2, 3, channels))
    y = ops.ChannelShuffle(groups)(x).numpy()
    np.testing.assert_array_equal(y, x.numpy()[..., order])


def test_channel_scale_and_subsample():
    x = tf.random.stateless_normal((2, 5, 5, 3), seed=(7, 8))
    scale = ops.ChannelScale(0.25)
    np.testing.assert_allclose(scale(x).numpy(), 0.25 * x.numpy(), rtol=1e-6)
    assert scale.scale.shape == (3,) and scale.scale.trainable
    np.testing.assert_array_equal(ops.Subsample(2)(x).numpy(), x.numpy()[:, ::2, ::2])
    assert ops.Subsample(2)(x).shape == (2, 3, 3, 3)
    shifted = ops.Subsample(2, (1, 0))(x)
    np.testing.assert_array_equal(shifted.numpy(), x.numpy()[:, 1::2, ::2])
    assert shifted.shape == (2, 2, 3, 3)


@pytest.mark.parametrize(
    "layer",
    [
        ops.ChannelShuffle(4, name="shuffle"),
        ops.ChannelScale(0.125, name="scale"),
        ops.Subsample(3, (1, 2), name="sub"),
        _binary_conv(4, kernel=5, dilation=2),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    # Registered under the package, so Keras finds the class from its serialized form.
    restored = tf.keras.layers.deserialize(tf.keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config


def test_grouped_conv_config_keeps_quantization():
    config = _binary_conv(4, kernel=5, dilation=2).get_config()
    clone = ops.GroupedQuantConv2D.from_config(config)
    assert clone.groups == 4 and clone.kernel_size == (5, 5) and clone.dilation_rate == (2, 2)
    assert clone.pad_values == 1.0
    assert isinstance(clone.input_quantizer, lq.quantizers.SteSign)
    assert isinstance(clone.kernel_quantizer, lq.quantizers.SteSign)
    assert isinstance(clone.kernel_constraint, lq.constraints.WeightClip)


@pytest.mark.parametrize(
    "kernel,per_group,weights,expected",
    [
        (3, 4, "binary", 1 / 6),
        (5, 2, "binary", 50**-0.5),
        (1, 16, "binary", 0.25),
        (3, 4, "real", 1.0),
        (5, 8, "real", 1.0),
    ],
)
def test_scale_init(kernel, per_group, weights, expected):
    cfg = ops.OpConfig.for_space("bats", "binary", weights)
    assert ops.scale_init(kernel, per_group, cfg) == pytest.approx(expected)


@pytest.mark.parametrize("op,kernel", [("group_conv_3x3", 3), ("dil_group_conv_5x5", 5)])
@pytest.mark.parametrize("groups", [1, 4])
def test_group_conv_scale_starts_at_scale_init(op, kernel, groups):
    cfg = ops.OpConfig(groups=groups)
    model = _op_model(op, 1, cfg)
    scale = model.get_layer("op_scale").get_weights()[0]
    expected = (kernel * kernel * C // groups) ** -0.5
    np.testing.assert_allclose(scale, np.full(C, expected), rtol=1e-6)
