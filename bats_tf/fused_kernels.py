"""Fused CPU kernels of the search cells, compiled from ``kernels/fused_ops.cc`` on first use.

The fused cells (:mod:`bats_tf.fused`) spend most of a search step in chains of elementwise
ops around each binary convolution, one pass over memory per TensorFlow op. Two kernels,
each with its gradient kernel, do each chain in one pass:

``affine_sign(x, gamma, beta)``  ``pad(sign(gamma * tile(x, E) + beta))`` (straight-through
                                 gradient ``1{|v| <= 1}``, as Larq's ``ste_sign``)
``prelu_mix(ys, alpha, weight)`` ``shuffle(sum_k weight_k * prelu(ys_k, alpha_k))``, plus the
                                 edge's weighted parameter-free terms (pools, identity)

The library is built with the C++ compiler (``$CXX``, default ``g++``) against the installed
TensorFlow's headers into ``$BATS_TF_KERNEL_CACHE`` (default ``~/.cache/bats_tf``), named by a
hash of the source, flags and TensorFlow version, so a rebuild happens only when one changes.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shlex
import subprocess
import tempfile

import tensorflow as tf

import bats_tf  # noqa: F401
from bats_tf import cpu
from bats_tf.errors import ConfigError, RunError
from bats_tf.search_config import FUSED_KERNELS as KINDS

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "fused_ops.cc")
FLAGS = ["-O3", "-ffp-contract=off", "-shared", "-fPIC"]  # no FMA: the rounding of TF's ops
# TensorFlow's bundled Eigen does not compile its AVX512-FP16 packet math with g++ 12
# (PacketMathFP16.h: "expected initializer before '<'"); the kernels use no half precision.
NO_FP16 = "-mno-avx512fp16"


def _cxx() -> list[str]:
    return shlex.split(os.environ.get("CXX", "g++"))


@functools.cache
def _accepts(cxx: tuple[str, ...], flag: str) -> bool:
    """Whether the compiler knows ``flag`` (older ones do not know ``-mno-avx512fp16``)."""
    probe = [*cxx, flag, "-fsyntax-only", "-x", "c++", os.devnull]
    try:
        return subprocess.run(probe, capture_output=True).returncode == 0
    except OSError:
        return False


def _target_flags(march: str) -> list[str]:
    """``-march=<march>`` and what keeps TensorFlow's headers compiling for it."""
    cxx = tuple(_cxx())
    return [f"-march={march}", *([NO_FP16] if _accepts(cxx, NO_FP16) else [])]


def _command(output: str, march: str = "native") -> list[str]:
    return [
        *_cxx(),
        *FLAGS,
        *_target_flags(march),
        SOURCE,
        "-o",
        output,
        *tf.sysconfig.get_compile_flags(),
        *tf.sysconfig.get_link_flags(),
    ]


def _compiler_error(stderr: str) -> str:
    """The compiler's first ``error:`` line (its last lines are often only notes)."""
    lines = stderr.strip().splitlines()
    errors = [line.strip() for line in lines if "error:" in line]
    return (errors or lines[-1:] or [""])[0]


def check_syntax(march: str) -> None:
    """Compiles the source for ``-march=<march>`` without code generation (any CPU can).

    Raises RuntimeError with the compiler's first error.
    """
    command = [c for c in _command(os.devnull, march) if c not in ("-shared", "-o", os.devnull)]
    proc = subprocess.run([*command, "-fsyntax-only"], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"-march={march}: {_compiler_error(proc.stderr)}")


def library_path() -> str:
    """Where the compiled library of this source, compiler, flags, TensorFlow and CPU lives."""
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read())
    key.update(" ".join([*_command(""), tf.__version__, cpu.description()]).encode())
    return os.path.join(cpu.cache_dir(), f"fused_ops-{key.hexdigest()[:16]}.so")


def build(path: str) -> None:
    """Compiles the library to ``path`` (written to a temporary file, then renamed)."""
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=os.path.dirname(path))
    except OSError as e:
        raise RuntimeError(
            f"cannot write the kernel cache {os.path.dirname(path)} ({e.strerror}): "
            "set $BATS_TF_KERNEL_CACHE to a writable folder"
        ) from e
    os.close(fd)
    try:
        proc = subprocess.run(_command(tmp), capture_output=True, text=True)
    except OSError as e:
        os.unlink(tmp)
        raise RuntimeError(f"cannot build the fused kernels: {e}") from e
    if proc.returncode:
        os.unlink(tmp)
        first = _compiler_error(proc.stderr)
        raise RuntimeError(
            f"cannot build the fused kernels ({SOURCE}): the compiler exited with "
            f"{proc.returncode}{': ' + first if first else ''}"
        )
    os.replace(tmp, path)


@functools.cache
def op_module():
    """The kernels' op module, built first if needed. Raises RuntimeError if it cannot be."""
    path = library_path()
    if not os.path.exists(path):
        build(path)
    return tf.load_op_library(path)


def resolve(kernels: str, log=print) -> str:
    """``"native"`` or ``"tf"`` for a ``fused_kernels`` setting: ``auto`` is native when the
    kernels build here, else TensorFlow ops (logged); ``native`` raises if they cannot."""
    if kernels not in KINDS:
        raise ConfigError("fused_kernels", f"expected one of {', '.join(KINDS)}", kernels)
    if kernels == "tf":
        return "tf"
    try:
        op_module()
    except (RuntimeError, tf.errors.NotFoundError) as e:
        if kernels == "native":
            raise RunError(str(e), "fused_kernels", "native") from e
        log(f"fused kernels unavailable, using TensorFlow ops: {e}")
        return "tf"
    return "native"


def affine_sign(x, gamma, beta, pads, pad_value: float, binarize: bool):
    """``pad(sign(gamma * tile(x, E) + beta))``: x ``(N, H, W, C)``, gamma/beta ``(E*C,)``,
    pads ``((top, bottom), (left, right))``; without ``binarize``, no sign."""
    flat = [int(p) for pair in pads for p in pair]
    return op_module().bats_affine_sign(
        x, gamma, beta, pads=flat, pad_value=float(pad_value), binarize=bool(binarize)
    )


def prelu_mix(ys, alpha, weight, edges: int, groups: int, free=(), free_weight=None):
    """``sum_k weight[k] * prelu(ys[k], alpha[k])``, each edge's ``groups`` channel groups
    shuffled, plus ``sum_f tile(free[f], E) * free_weight[f]``: ys ``(..., E*C)`` each,
    alpha/weight ``(K, E*C)``, free ``(..., C)`` each, free_weight ``(F, E*C)``."""
    if free_weight is None:
        free_weight = tf.zeros([0, weight.shape[-1]])
    return op_module().bats_prelu_mix(
        list(ys), alpha, weight, list(free), free_weight, edges=edges, groups=groups
    )


@tf.RegisterGradient("BatsAffineSign")
def _affine_sign_grad(op, dz):
    dx, dgamma, dbeta = op_module().bats_affine_sign_grad(
        dz, *op.inputs, pads=op.get_attr("pads"), binarize=op.get_attr("binarize")
    )
    return dx, dgamma, dbeta


@tf.RegisterGradient("BatsPreluMix")
def _prelu_mix_grad(op, dout):
    k, f = op.get_attr("K"), op.get_attr("F")
    inputs = list(op.inputs)
    ys, (alpha, weight), free = inputs[:k], inputs[k : k + 2], inputs[k + 2 : k + 2 + f]
    grads = op_module().bats_prelu_mix_grad(
        dout,
        ys,
        alpha,
        weight,
        free,
        inputs[-1],
        edges=op.get_attr("edges"),
        groups=op.get_attr("groups"),
    )
    return [*grads.dys, grads.dalpha, grads.dweight, *grads.dfree, grads.dfree_weight]


def main() -> int:
    """``python -m bats_tf.fused_kernels``: builds the kernels; the last line says whether
    searches run them (the fast path) or fall back to TensorFlow ops."""
    try:
        op_module()
    except (RuntimeError, tf.errors.NotFoundError) as e:
        print(f"fast path OFF: {e}")
        print("fast path OFF: searches fall back to TensorFlow ops (slower, same results)")
        return 1
    print(f"fast path ON: fused kernels built at {library_path()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
