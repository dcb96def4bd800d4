"""bfloat16 where it is exact: the binary convolutions of a network or supernet.

A binary convolution multiplies +-1 by +-1, so its operands are exact in bfloat16 and every
output is an integer sum of ``fan_in`` terms. TensorFlow's bfloat16 convolution accumulates
in float32 but rounds its output to bfloat16, which holds every integer up to 2^8 and every
even one up to 2^9; a sum of ``n`` terms +-1 has the parity of ``n``. So a convolution whose
per-group fan-in (kernel taps x input channels per group) stays within that bound is exact,
and a larger one is split over its input channels into chunks that do, each chunk's output
cast to float32 and summed there (exact: integers far below 2^24). The forward result is
bit-identical to float32. Gradients pass through the same bfloat16 convolutions (a float32
incoming gradient rounded to bfloat16): mixed-precision training, checked against float32
by :func:`gradients_agree` and in the tests.

Everything else (normalisation, scales, PReLU, the alphas, the loss) stays float32.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os

import bats_tf  # noqa: F401

# isort: split
import numpy as np
import tensorflow as tf

from bats_tf import cpu, io_utils
from bats_tf.errors import ConfigError, WriteFailed
from bats_tf.op_specs import CONV_PRECISIONS

EXACT_ODD, EXACT_EVEN = 2**8, 2**9  # largest exact integer sums in bfloat16, by parity
PROBE_RTOL = 0.05  # bfloat16 gradients within this relative distance of float32's agree


def exact_chunks(taps: int, channels: int) -> int:
    """The fewest chunks of ``channels`` (input channels per group; a divisor of it) whose
    sums of ``taps * channels / chunks`` terms +-1 are exact in bfloat16."""
    for n in range(1, channels + 1):
        if channels % n:
            continue
        fan_in = taps * (channels // n)
        if fan_in <= (EXACT_EVEN if fan_in % 2 == 0 else EXACT_ODD):
            return n
    raise ValueError(f"a {taps}-tap kernel has no exact bfloat16 sum")  # taps > 512


def binary_conv2d(x, kernel, strides=1, padding="VALID", dilations=1):
    """``tf.nn.conv2d`` of +-1 inputs and a +-1 kernel in bfloat16, float32 out, exact.

    Grouped when ``kernel``'s input channels divide ``x``'s (as ``tf.nn.conv2d``). Inputs
    and kernel may arrive in float32 (values +-1; the padding value too).
    """
    k, _, cg, _ = kernel.shape
    groups = x.shape[-1] // cg
    n = exact_chunks(k * kernel.shape[1], cg)
    xb, kb = tf.cast(x, tf.bfloat16), tf.cast(kernel, tf.bfloat16)

    def conv(a, b):
        y = tf.nn.conv2d(a, b, strides, padding, dilations=dilations)
        return tf.cast(y, tf.float32)

    if n == 1:
        return conv(xb, kb)
    cs = cg // n
    shape = tf.shape(xb)
    by_group = tf.reshape(xb, tf.concat([shape[:3], [groups, cg]], 0))
    parts = []
    for j in range(n):
        xj = tf.reshape(by_group[..., j * cs : (j + 1) * cs], tf.concat([shape[:3], [-1]], 0))
        xj.set_shape([*x.shape[:3], groups * cs])
        parts.append(conv(xj, kb[:, :, j * cs : (j + 1) * cs, :]))
    return tf.add_n(parts)


def resolve(precision: str) -> str:
    """``float32`` or ``bfloat16`` for a ``precision`` setting.

    ``auto`` is bfloat16 on a GPU or on a CPU with AMX bfloat16 matrix units, where the
    binary convolutions run several times faster, and float32 elsewhere (on AVX512-BF16
    without AMX the gain depends on the shapes: ``benchmarks`` measures it). The
    ``BATS_PRECISION`` environment variable overrides ``auto``.
    """
    if precision not in CONV_PRECISIONS:
        raise ConfigError("precision", f"expected one of {', '.join(CONV_PRECISIONS)}", precision)
    if precision != "auto":
        return precision
    forced = os.environ.get("BATS_PRECISION")
    if forced in ("float32", "bfloat16"):
        return forced
    if tf.config.list_physical_devices("GPU") or "amx_bf16" in cpu.flags():
        return "bfloat16"
    return "float32"


@functools.cache
def gradients_agree(kernel: int, dilation: int, stride: int) -> bool:
    """Whether TensorFlow's bfloat16 convolution of this shape has finite gradients close to
    float32's on this machine (a wrong kernel of some CPU makes a run fall back to float32
    for that convolution instead of training on wrong gradients).

    The answer is kept in :func:`probe_path` (the probe takes about a second per shape).
    """
    path, key = probe_path(), f"{kernel},{dilation},{stride}"
    known = _read_probes(path)
    if key not in known:
        with tf.init_scope():  # eager, even when a layer is built inside a graph
            known[key] = _gradients_agree(kernel, dilation, stride, PROBE_RTOL)
        try:
            io_utils.atomic_write_json(path, {**_read_probes(path), key: known[key]})
        except (OSError, WriteFailed):
            pass  # a cache only: the probe runs again next time
    return known[key]


def probe_path() -> str:
    """The probe's answers for this machine and TensorFlow version."""
    key = hashlib.sha256(f"{tf.__version__} {PROBE_RTOL} {cpu.description()}".encode())
    return os.path.join(cpu.cache_dir(), f"bfloat16_gradients-{key.hexdigest()[:16]}.json")


def _read_probes(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            known = json.load(f)
    except (OSError, ValueError):
        return {}
    return (
        {k: v for k, v in known.items() if isinstance(v, bool)} if isinstance(known, dict) else {}
    )


def _gradients_agree(kernel, dilation, stride, rtol):
    """The probe: gradients of a bfloat16 and a float32 convolution of random +-1 tensors."""
    rng = np.random.RandomState(0)
    # 32x32 and larger inputs: where oneDNN's bfloat16 gradient of a dilated convolution
    # was seen to be NaN on a CPU with AMX.
    x = tf.constant(np.sign(rng.randn(2, 32, 32, 32)).astype("float32"))
    w = tf.constant(np.sign(rng.randn(kernel, kernel, 32, 16)).astype("float32"))
    probe = tf.constant(rng.randn(2, 32, 32, 16).astype("float32"))

    def grads(conv):
        @tf.function(autograph=False)  # symbolic gradients: tapes pause in tf.init_scope
        def f():
            if dilation > 1:  # TensorFlow convs are strided or dilated, not both
                y = conv(x, w, 1, "SAME", dilations=dilation)[:, ::stride, ::stride, :]
            else:
                y = conv(x, w, stride, "SAME")
            loss = tf.reduce_sum(y * probe[:, : y.shape[1], : y.shape[2], :])
            return tf.gradients(loss, [x, w])

        return [g.numpy() for g in f()]

    for g, r in zip(grads(binary_conv2d), grads(tf.nn.conv2d)):
        if not np.all(np.isfinite(g)) or np.linalg.norm(g - r) > rtol * np.linalg.norm(r):
            return False
    return True
