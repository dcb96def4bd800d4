"""Operations of the search spaces, built from Larq layers.

One definition of each operation serves the supernet and the final network:
:func:`apply_op` builds an op as its spec (:data:`bats_tf.op_specs.OP_SPECS`) says, from
Keras/Larq layers applied to a (symbolic) tensor, so the final network is a flat functional
model whose binary convolutions are plain ``lq.layers.QuantConv2D`` layers that Larq's
summary counts and Larq Compute Engine (LCE) converts into ``LceBconv2d``.
"""

from __future__ import annotations

import dataclasses

import larq as lq
import tensorflow as tf

import bats_tf  # noqa: F401  (selects Keras 2 before TensorFlow loads)
from bats_tf import op_specs
from bats_tf import precision as precision_lib
from bats_tf.op_specs import BN_EPSILON, BN_MOMENTUM, PRELU_INIT, spec_of
from bats_tf.search_space import Space, get_space

_register = tf.keras.utils.register_keras_serializable(package="bats_tf")


def serializable(cls):
    """Registers a layer of this package for saving and calls it without autograph.

    These layers branch on Python values only; autograph's source conversion of their
    ``call`` (and of the Larq quantizers they call) slowed down building a supernet.
    """
    cls._should_use_autograph = lambda self: False  # tf-keras's switch (pinned version)
    return _register(cls)


@dataclasses.dataclass(frozen=True)
class OpConfig:
    """How the ops of a space are built.

    groups: groups of the binary grouped convolutions (BATS space).
    binary_activations / binary_weights: sign-binarize conv inputs / kernels (Larq ``ste_sign``).
    scaling: learned per-channel scale after each binary conv.
    shortcut: identity shortcut around convolution ops at stride 1.
    pool_bn: BatchNorm after pooling (the DARTS supernet does this, the final network not).
    bn_momentum: momentum of every BatchNorm.
    grouped_conv: "direct" runs grouped convs on TensorFlow's own kernel
        (:class:`GroupedQuantConv2D`); "keras" keeps tf-keras's XLA path (slow on CPU,
        kept for comparison).
    precision: "float32", or "bfloat16" for the binary convolutions (exact, see
        :mod:`bats_tf.precision`; direct grouped convs only).
    """

    groups: int = 4
    binary_activations: bool = True
    binary_weights: bool = True
    scaling: bool = True
    shortcut: bool = True
    pool_bn: bool = False
    bn_momentum: float = BN_MOMENTUM
    grouped_conv: str = "direct"
    precision: str = "float32"

    @classmethod
    def for_space(
        cls, space: str | Space, activations: str = "binary", weights: str = "binary", **kw
    ):
        """The config of ``space`` at a precision (``darts`` is always real-valued).

        # Arguments
            space: a search space or its name.
            activations: ``"binary"`` or ``"real"`` conv inputs, in a binary space.
            weights: ``"binary"`` or ``"real"`` conv kernels, in a binary space.
            **kw: other fields of the config.
        """
        binary = get_space(space).binary
        return cls(
            binary_activations=binary and activations == "binary",
            binary_weights=binary and weights == "binary",
            **kw,
        )

    @property
    def pad_value(self) -> float:
        # Binary inputs are +-1: pad with 1.0 so LCE can fuse the padding into LceBconv2d.
        return 1.0 if self.binary_activations else 0.0


@serializable
class GroupedQuantConv2D(lq.layers.QuantConv2D):
    """``lq.layers.QuantConv2D`` whose grouped convolution runs as a plain convolution op.

    tf-keras sends every ``groups > 1`` convolution through an XLA-compiled function, which
    is much slower on CPU than TensorFlow's own grouped ``Conv2D`` kernel. This layer
    calls that kernel directly; weights, config and the converted graph are those of
    ``QuantConv2D``. With ``precision="bfloat16"`` a binary convolution (binary inputs and
    kernel) runs as :func:`bats_tf.precision.binary_conv2d`: the same outputs, bit for bit.
    """

    def __init__(self, *args, precision: str = "float32", **kwargs):
        super().__init__(*args, **kwargs)
        self.precision = precision
        quantizers = (self.input_quantizer, self.kernel_quantizer)
        self.bfloat16 = (
            precision == "bfloat16"
            and all(isinstance(q, lq.quantizers.SteSign) for q in quantizers)
            and precision_lib.gradients_agree(
                self.kernel_size[0], self.dilation_rate[0], self.strides[0]
            )
        )

    def convolution_op(self, inputs, kernel):
        if not self.bfloat16:
            return super().convolution_op(inputs, kernel)
        return precision_lib.binary_conv2d(
            inputs, kernel, list(self.strides), self.padding.upper(), list(self.dilation_rate)
        )

    def _jit_compiled_convolution_op(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)

    def get_config(self):
        return {**super().get_config(), "precision": self.precision}


@serializable
class ChannelShuffle(tf.keras.layers.Layer):
    """Interleaves the channels of ``groups`` groups (ShuffleNet), so groups mix."""

    def __init__(self, groups: int, **kwargs):
        super().__init__(**kwargs)
        self.groups = groups

    def call(self, x):
        h, w, c = x.shape[1], x.shape[2], x.shape[3]
        x = tf.reshape(x, [-1, h, w, self.groups, c // self.groups])
        x = tf.transpose(x, [0, 1, 2, 4, 3])
        return tf.reshape(x, [-1, h, w, c])

    def get_config(self):
        return {**super().get_config(), "groups": self.groups}


@serializable
class ChannelScale(tf.keras.layers.Layer):
    """A learned per-channel scale (the real-valued gain of a binary convolution)."""

    def __init__(self, init: float = 1.0, **kwargs):
        super().__init__(**kwargs)
        self.init = float(init)

    def build(self, input_shape):
        self.scale = self.add_weight(
            name="scale",
            shape=(input_shape[-1],),
            initializer=tf.constant_initializer(self.init),
            trainable=True,
        )

    def call(self, x):
        return x * self.scale

    def get_config(self):
        return {**super().get_config(), "init": self.init}


def scale_init(kernel: int, channels_in_per_group: int, op_config: OpConfig) -> float:
    """Initial scale of a conv: ``1/sqrt(fan_in)`` for a binary kernel, so outputs start
    with unit variance (a sum of ``fan_in`` products of +-1), else 1."""
    return (kernel * kernel * channels_in_per_group) ** -0.5 if op_config.binary_weights else 1.0


@serializable
class Subsample(tf.keras.layers.Layer):
    """Keeps the pixels ``(offset[0] + stride * i, offset[1] + stride * j)``.

    Runs a strided dilated conv, which TensorFlow's convolutions cannot do in one op (see
    :func:`strided_conv`).
    """

    def __init__(self, stride: int = 2, offset=(0, 0), **kwargs):
        super().__init__(**kwargs)
        self.stride = stride
        self.offset = (offset, offset) if isinstance(offset, int) else tuple(offset)

    def call(self, x):
        (h, w), s = self.offset, self.stride
        return x[:, h::s, w::s, :]

    def get_config(self):
        return {**super().get_config(), "stride": self.stride, "offset": list(self.offset)}


def batch_norm(op_config: OpConfig, name: str, affine: bool = True):
    return tf.keras.layers.BatchNormalization(
        momentum=op_config.bn_momentum, epsilon=BN_EPSILON, center=affine, scale=affine, name=name
    )


def conv(
    filters: int,
    kernel: int,
    op_config: OpConfig,
    name: str,
    stride: int = 1,
    dilation: int = 1,
    groups: int = 1,
    binary: bool = True,
):
    """A convolution quantized as ``op_config`` says (``binary=False`` forces a real one)."""
    acts = binary and op_config.binary_activations
    weights = binary and op_config.binary_weights
    layer, extra = lq.layers.QuantConv2D, {}
    if op_config.grouped_conv == "direct":
        layer, extra = GroupedQuantConv2D, dict(precision=op_config.precision)
    return layer(
        filters,
        kernel,
        strides=stride,
        dilation_rate=dilation,
        groups=groups,
        padding="same",
        pad_values=op_config.pad_value if acts else 0.0,
        input_quantizer="ste_sign" if acts else None,
        kernel_quantizer="ste_sign" if weights else None,
        kernel_constraint="weight_clip" if weights else None,
        use_bias=False,
        kernel_initializer="glorot_normal",
        name=name,
        **extra,
    )


def prelu(name: str):
    return tf.keras.layers.PReLU(
        alpha_initializer=tf.keras.initializers.Constant(PRELU_INIT), shared_axes=[1, 2], name=name
    )


def strided_conv(x, build, kernel: int, stride: int, dilation: int, name: str):
    """``build(stride, dilation)(x)``, where ``build`` returns a "same" conv layer.

    TensorFlow cannot run a conv both strided and dilated. When the dilation is a multiple
    of the stride, the conv reads every ``stride``-th pixel only: it runs at dilation
    ``dilation // stride`` and stride 1 on those pixels (``stride**2`` times fewer MACs), if
    that is exactly the same function (:func:`bats_tf.op_specs.subsampled_offset`).
    Otherwise it runs at stride 1 and its output is subsampled on the strided conv's grid,
    that of every op at this stride (:func:`bats_tf.op_specs.same_offset`). ``name``
    names the :class:`Subsample` layer.
    """
    if stride == 1 or dilation == 1:
        return build(stride, dilation)(x)
    sizes = x.shape[1:3]
    if None in sizes:
        raise ValueError(f"{name}: a strided dilated conv needs a known input size")
    cheap = [op_specs.subsampled_offset(n, kernel, stride, dilation) for n in sizes]
    if None not in cheap:
        y = Subsample(stride, cheap, name=name)(x)
        return build(1, dilation // stride)(y)
    grid = [op_specs.same_offset(n, kernel, stride, dilation) for n in sizes]
    return Subsample(stride, grid, name=name)(build(1, dilation)(x))


def group_conv(x, channels, stride, op_config, name, kernel=3, dilation=1):
    """BATS binary conv op: BN -> sign -> grouped binary conv -> scale -> PReLU -> shuffle (+ x)."""
    groups = op_config.groups
    y = batch_norm(op_config, f"{name}_bn")(x)

    def build(conv_stride, conv_dilation):
        return conv(
            channels,
            kernel,
            op_config,
            f"{name}_conv",
            stride=conv_stride,
            dilation=conv_dilation,
            groups=groups,
        )

    y = strided_conv(y, build, kernel, stride, dilation, f"{name}_sub")
    if op_config.scaling:
        init = scale_init(kernel, x.shape[-1] // groups, op_config)
        y = ChannelScale(init, name=f"{name}_scale")(y)
    y = prelu(f"{name}_prelu")(y)
    if groups > 1:
        y = ChannelShuffle(groups, name=f"{name}_shuffle")(y)
    if stride == 1 and op_config.shortcut and x.shape[-1] == channels:
        y = tf.keras.layers.Add(name=f"{name}_add")([y, x])
    return y


def darts_conv(x, channels, stride, op_config, name, kernel=3, dilation=1, separable=True):
    """DARTS sep/dil conv: (ReLU ->) depthwise -> 1x1 -> BN, twice for separable convs.

    Binarized (``op_config.binary_*``), the sign quantizers of the convs replace the ReLUs.
    """
    binary = op_config.binary_activations
    y = x
    repeats = 2 if separable else 1
    for r in range(repeats):
        s = stride if r == 0 else 1
        if not binary:
            y = tf.keras.layers.ReLU(name=f"{name}_relu{r}")(y)

        def build(conv_stride, conv_dilation, r=r):
            return lq.layers.QuantDepthwiseConv2D(
                kernel,
                strides=conv_stride,
                dilation_rate=conv_dilation,
                padding="same",
                pad_values=op_config.pad_value,
                input_quantizer="ste_sign" if binary else None,
                depthwise_quantizer="ste_sign" if op_config.binary_weights else None,
                depthwise_constraint="weight_clip" if op_config.binary_weights else None,
                use_bias=False,
                name=f"{name}_dw{r}",
            )

        y = strided_conv(y, build, kernel, s, dilation, f"{name}_{r}_sub")
        y = conv(channels, 1, op_config, f"{name}_pw{r}")(y)
        y = batch_norm(op_config, f"{name}_bn{r}")(y)
    return y


def pool(x, channels, stride, op_config, name, kind="max", size=3):
    """A ``size x size`` max or average pool (then a parameter-free BN if ``pool_bn``)."""
    layer = tf.keras.layers.MaxPool2D if kind == "max" else tf.keras.layers.AveragePooling2D
    y = layer(size, strides=stride, padding="same", name=f"{name}_pool")(x)
    if op_config.pool_bn:
        y = batch_norm(op_config, f"{name}_bn", affine=False)(y)
    return y


def factorized_reduce(x, channels, op_config, name):
    """Halves the resolution with two offset real 1x1 stride-2 convs (DARTS), then BN.

    The first half of the channels samples pixels ``(2i, 2j)``, the second ``(2i+1, 2j+1)``;
    at even sizes the other ops at stride 2 sample the second grid (``same_offset``). Odd
    sizes are not supported (the two halves differ in size). Kept real-valued: it is a
    downsampling shortcut, cheap, and carries the signal.
    """
    k, s, o = op_specs.REDUCE_KERNEL, op_specs.REDUCE_STRIDE, op_specs.REDUCE_OFFSET
    first, second = op_specs.reduce_channels(channels)
    a = conv(first, k, op_config, f"{name}_fr1", stride=s, binary=False)(x)
    shifted = tf.keras.layers.Cropping2D(((o, 0), (o, 0)), name=f"{name}_crop")(x)
    b = conv(second, k, op_config, f"{name}_fr2", stride=s, binary=False)(shifted)
    y = tf.keras.layers.Concatenate(name=f"{name}_cat")([a, b])
    return batch_norm(op_config, f"{name}_bn")(y)


def skip_connect(x, channels, stride, op_config, name):
    return x if stride == 1 else factorized_reduce(x, channels, op_config, name)


def preprocess(x, channels, op_config, name):
    """Cell input: BN -> 1x1 conv (quantized as the ops) -> scale -> PReLU."""
    y = batch_norm(op_config, f"{name}_bn")(x)
    y = conv(channels, 1, op_config, f"{name}_conv")(y)
    if op_config.scaling:
        y = ChannelScale(scale_init(1, x.shape[-1], op_config), name=f"{name}_scale")(y)
    return prelu(f"{name}_prelu")(y)


def apply_op(op: str, x, channels: int, stride: int, op_config: OpConfig, name: str):
    """Applies primitive ``op`` (any but ``none``) to ``x``, as its spec in
    :data:`bats_tf.op_specs.OP_SPECS` says; the output has ``channels`` channels.

    # Arguments
        op: the primitive's name.
        x: the input tensor ``(B, H, W, C_in)``.
        channels: output channels.
        stride: 1, or 2 in a reduction.
        op_config: how the op is built.
        name: prefix of the names of its layers.
    """
    spec = spec_of(op)
    if spec.kind == "skip":
        return skip_connect(x, channels, stride, op_config, name)
    if spec.kind == "pool":
        return pool(x, channels, stride, op_config, name, kind=spec.pool, size=spec.kernel)
    if spec.kind == "group_conv":
        return group_conv(x, channels, stride, op_config, name, spec.kernel, spec.dilation)
    if spec.kind in ("sep_conv", "dil_conv"):
        separable = spec.kind == "sep_conv"
        return darts_conv(
            x, channels, stride, op_config, name, spec.kernel, spec.dilation, separable
        )
    raise ValueError(f"unknown op '{op}': it has no layers")


CUSTOM_OBJECTS = {
    "GroupedQuantConv2D": GroupedQuantConv2D,
    "ChannelShuffle": ChannelShuffle,
    "ChannelScale": ChannelScale,
    "Subsample": Subsample,
}
