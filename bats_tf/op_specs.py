"""What each primitive op is: one table read by every formulation of the ops.

The Keras reference layers (:mod:`bats_tf.ops`), the fused search cells (:mod:`bats_tf.fused`,
which pass the paddings computed here to the C++ kernels of :mod:`bats_tf.fused_kernels`) and
the benchmark's op names all take kernel sizes, dilations and pool types from
:data:`OP_SPECS`. This module imports no TensorFlow.

Kinds:
  ``none``        no connection (zeros); never applied
  ``skip``        identity, or a factorized reduce at stride 2
  ``pool``        ``kernel x kernel`` max or average pooling
  ``group_conv``  BATS binary grouped conv: BN -> sign -> conv -> scale -> PReLU -> shuffle
  ``sep_conv``    DARTS separable conv: (ReLU ->) depthwise -> 1x1 -> BN, twice
  ``dil_conv``    DARTS dilated conv: (ReLU ->) depthwise -> 1x1 -> BN, once
"""

from __future__ import annotations

import dataclasses

# Number formats a binary convolution may run in while training (bats_tf.precision); "auto"
# picks bfloat16 where the machine runs it fast.
CONV_PRECISIONS = ("auto", "float32", "bfloat16")

KINDS = ("none", "skip", "pool", "group_conv", "sep_conv", "dil_conv")

BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
PRELU_INIT = 0.25

# Factorized reduce: two real 1x1 convs at stride 2, the second on the input shifted by one
# pixel down and right; their outputs (half the channels each) are concatenated. The first
# samples pixels (2i, 2j), the second (2i+1, 2j+1) (see ``same_offset``: a 1x1 window needs no
# padding), so at even sizes only the second is the grid of the other ops at stride 2.
REDUCE_KERNEL, REDUCE_STRIDE, REDUCE_OFFSET = 1, 2, 1


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One primitive op.

    kind: one of :data:`KINDS`.
    kernel: kernel size of a conv or window of a pool (0 for ``none`` and ``skip``).
    dilation: dilation of a conv.
    pool: ``"max"`` or ``"avg"`` for a pool.
    """

    kind: str
    kernel: int = 0
    dilation: int = 1
    pool: str | None = None

    @property
    def parameter_free(self) -> bool:
        """Pools and skips carry no weights of their own (``none`` is no op at all)."""
        return self.kind in ("pool", "skip")

    @property
    def is_conv(self) -> bool:
        return self.kind in ("group_conv", "sep_conv", "dil_conv")


OP_SPECS = {
    "none": OpSpec("none"),
    "max_pool_3x3": OpSpec("pool", 3, pool="max"),
    "avg_pool_3x3": OpSpec("pool", 3, pool="avg"),
    "skip_connect": OpSpec("skip"),
    "group_conv_3x3": OpSpec("group_conv", 3),
    "group_conv_5x5": OpSpec("group_conv", 5),
    "dil_group_conv_3x3": OpSpec("group_conv", 3, 2),
    "dil_group_conv_5x5": OpSpec("group_conv", 5, 2),
    "sep_conv_3x3": OpSpec("sep_conv", 3),
    "sep_conv_5x5": OpSpec("sep_conv", 5),
    "dil_conv_3x3": OpSpec("dil_conv", 3, 2),
    "dil_conv_5x5": OpSpec("dil_conv", 5, 2),
}


def spec_of(op: str) -> OpSpec:
    """The spec of primitive ``op``; ValueError if there is none."""
    try:
        return OP_SPECS[op]
    except KeyError:
        raise ValueError(f"unknown op '{op}'") from None


def same_padding(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """(before, after) padding of a "same" convolution or pool, as TensorFlow computes it."""
    out = -(-size // stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def same_offset(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """First pixel of the grid a "same" conv or pool at ``stride`` samples.

    Its output ``i`` is the stride-1 "same" conv's output ``offset + stride * i`` (for an odd
    window: centred on input pixel ``offset + stride * i``). At stride 2 and an odd window
    wider than 1 pixel, the offset is 1 for an even ``size`` (TensorFlow pads less before
    than after) and 0 for an odd one; a 1x1 window needs no padding: offset 0.
    """
    before = same_padding(size, kernel, stride, dilation)[0]
    return same_padding(size, kernel, 1, dilation)[0] - before


def subsampled_offset(size: int, kernel: int, stride: int, dilation: int) -> int | None:
    """Where a strided dilated "same" conv is a conv on a subsampled input, or None.

    When ``dilation`` is a multiple of ``stride``, the conv reads one grid of every
    ``stride``-th pixel. It then equals the "same" conv of dilation ``dilation // stride`` at
    stride 1 on the input pixels ``offset + stride * j`` (``stride**2`` times fewer MACs),
    provided both read the same pixels and the same padding; returns that ``offset`` if so.
    """
    if stride == 1 or dilation % stride:
        return None
    before = same_padding(size, kernel, stride, dilation)[0]
    offset = -before % stride
    sub = -(-(size - offset) // stride)  # pixels of the subsampled input
    sub_before = same_padding(sub, kernel, 1, dilation // stride)[0]
    if sub == -(-size // stride) and offset - stride * sub_before == -before:
        return offset
    return None


def reduce_channels(channels: int) -> tuple[int, int]:
    """Output channels of the two convs of a factorized reduce to ``channels``."""
    return channels // 2, channels - channels // 2
