"""The fused C++ kernels compute TensorFlow's op chains and their gradients."""

import bats_tf  # noqa: F401

# isort: split
import os
import subprocess
import sys

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from conftest import RUN_TIMEOUT

from bats_tf import fused_kernels, ops, supernet
from bats_tf.errors import RunError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N, H, W, C, E = 3, 7, 6, 8, 3


def _grads(fn, inputs, probe):
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        out = fn(*inputs)
        loss = tf.reduce_sum(out * probe)
    return out.numpy(), [None if g is None else g.numpy() for g in tape.gradient(loss, inputs)]


@pytest.mark.parametrize("binarize", [True, False])
def test_affine_sign_matches_tensorflow_ops(binarize):
    rng = np.random.RandomState(0)
    pads, pad_value = ((1, 2), (0, 3)), 1.0 if binarize else 0.0
    # Values around 0 and +-1, where sign and the straight-through mask switch.
    x = tf.constant(rng.choice([-1.5, -1.0, -0.3, 0.0, 0.4, 1.0, 2.0], (N, H, W, C)), tf.float32)
    gamma = tf.constant(rng.uniform(0.5, 1.5, E * C), tf.float32)
    beta = tf.constant(rng.uniform(-0.3, 0.3, E * C), tf.float32)
    probe = tf.constant(rng.randn(N, H + 3, W + 3, E * C), tf.float32)

    def chain(x, gamma, beta):
        z = tf.tile(x, [1, 1, 1, E]) * gamma + beta
        z = lq.quantizers.ste_sign(z) if binarize else z
        return tf.pad(z, [[0, 0], *pads, [0, 0]], constant_values=pad_value)

    def kernel(x, gamma, beta):
        return fused_kernels.affine_sign(x, gamma, beta, pads, pad_value, binarize)

    want, want_grads = _grads(chain, [x, gamma, beta], probe)
    got, got_grads = _grads(kernel, [x, gamma, beta], probe)
    assert got.shape == (N, H + 3, W + 3, E * C)
    np.testing.assert_array_equal(got, want)
    for have, ref in zip(got_grads, want_grads):
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(have, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups, n_free", [(1, 0), (4, 2)])
def test_prelu_mix_matches_tensorflow_ops(groups, n_free):
    rng = np.random.RandomState(1)
    k = 3
    ys = [tf.constant(rng.randn(N, H, W, E * C), tf.float32) for _ in range(k)]
    alpha = tf.constant(rng.uniform(-0.5, 0.5, (k, E * C)), tf.float32)
    weight = tf.constant(rng.uniform(0, 1, (k, E * C)), tf.float32)
    free = [tf.constant(rng.randn(N, H, W, C), tf.float32) for _ in range(n_free)]
    free_weight = tf.constant(rng.uniform(0, 1, (n_free, E * C)), tf.float32)
    probe = tf.constant(rng.randn(N, H, W, E * C), tf.float32)

    def chain(*args):
        ys, alpha, weight = args[:k], args[k], args[k + 1]
        free, free_weight = args[k + 2 : k + 2 + n_free], args[-1]
        y = tf.add_n([tf.where(y > 0, y, y * alpha[i]) * weight[i] for i, y in enumerate(ys)])
        y = tf.reshape(y, [N, H, W, E, groups, C // groups])
        y = tf.reshape(tf.transpose(y, [0, 1, 2, 3, 5, 4]), [N, H, W, E * C])
        return y + sum(tf.tile(f, [1, 1, 1, E]) * free_weight[i] for i, f in enumerate(free))

    def kernel(*args):
        free, free_weight = args[k + 2 : k + 2 + n_free], args[-1]
        return fused_kernels.prelu_mix(args[:k], args[k], args[k + 1], E, groups, free, free_weight)

    inputs = [*ys, alpha, weight, *free, free_weight]
    want, want_grads = _grads(chain, inputs, probe)
    got, got_grads = _grads(kernel, inputs, probe)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert len(got_grads) == k + 3 + n_free
    if not n_free:  # an empty free_weight: TensorFlow's chain does not use it
        assert want_grads[-1] is None and got_grads[-1].shape == (0, E * C)
        got_grads, want_grads = got_grads[:-1], want_grads[:-1]
    for have, ref in zip(got_grads, want_grads):
        assert np.abs(ref).max() > 0
        np.testing.assert_allclose(have, ref, rtol=1e-5, atol=1e-5)


def test_kernels_reject_mismatched_shapes():
    x = tf.zeros((1, 4, 4, C))
    with pytest.raises(tf.errors.InvalidArgumentError, match="multiple of x's channels"):
        fused_kernels.affine_sign(x, tf.ones(C + 1), tf.ones(C + 1), ((0, 0), (0, 0)), 1.0, True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="split into edges and groups"):
        fused_kernels.prelu_mix([tf.zeros((1, 2, 2, 6))], tf.ones((1, 6)), tf.ones((1, 6)), 1, 4)


def test_native_and_tf_supernets_agree():
    """Same weights, same logits and gradients, through the native kernels and TF's ops."""
    kw = dict(num_classes=10, image_size=16, init_channels=8, layers=3, nodes=2)
    cfg = ops.OpConfig(groups=2, pool_bn=True)
    native = supernet.build_supernet("bats", op_config=cfg, fused_kernels="native", **kw)
    plain = supernet.build_supernet("bats", op_config=cfg, fused_kernels="tf", **kw)
    plain.set_weights(native.get_weights())
    rng = np.random.RandomState(2)
    images = tf.constant(rng.randn(4, 16, 16, 3), tf.float32)
    arch = [tf.nn.softmax(tf.constant(rng.randn(1, 5, 8), tf.float32)) for _ in range(2)]
    results = []
    for model in (native, plain):
        with tf.GradientTape() as tape:
            tape.watch(arch)
            logits = model([images, *arch], training=True)
            loss = tf.reduce_sum(logits * tf.range(10, dtype=tf.float32))
        grads = tape.gradient(loss, [*arch, *model.trainable_variables])
        results.append((logits.numpy(), [g.numpy() for g in grads]))
    (want, want_grads), (got, got_grads) = results[1], results[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert len(got_grads) == len(want_grads)
    for have, ref in zip(got_grads, want_grads):
        np.testing.assert_allclose(have, ref, rtol=1e-3, atol=1e-3)


def test_a_failed_build_falls_back_or_names_the_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("BATS_TF_KERNEL_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a compiler that always fails
    fused_kernels.op_module.cache_clear()
    try:
        logged = []
        assert fused_kernels.resolve("auto", logged.append) == "tf"
        assert "using TensorFlow ops" in logged[0]
        with pytest.raises(RunError, match="^fused_kernels=native: cannot build"):
            fused_kernels.resolve("native")
        assert os.listdir(tmp_path) == []  # nothing half-written left behind
        monkeypatch.delenv("CXX")
        (tmp_path / "file").write_text("not a folder")
        monkeypatch.setenv("BATS_TF_KERNEL_CACHE", str(tmp_path / "file" / "cache"))
        with pytest.raises(RunError, match="cannot write the kernel cache .*KERNEL_CACHE"):
            fused_kernels.resolve("native")
    finally:
        fused_kernels.op_module.cache_clear()
    assert fused_kernels.resolve("tf") == "tf"
    with pytest.raises(ValueError, match="^fused_kernels=gpu: expected one of"):
        fused_kernels.resolve("gpu")


@pytest.mark.parametrize(
    "march", ["x86-64-v3", "x86-64-v4", "znver3", "icelake-server", "sapphirerapids"]
)
def test_source_compiles_for_other_cpus(march):
    """The build flags work with TensorFlow's headers on CPUs this machine may not be
    (AVX2 only, generic AVX-512, AMD, Intel AVX-512, AVX512-FP16 with AMX)."""
    fused_kernels.check_syntax(march)


def test_a_failed_build_shows_the_first_compiler_error(tmp_path, monkeypatch):
    compiler = tmp_path / "cxx"
    compiler.write_text(
        '#!/bin/sh\nfor a; do [ "$a" = -fsyntax-only ] && exit 0; done\n'
        "echo 'h.h:740: error: expected initializer' >&2\n"
        "echo 'x.cc:1: note: deprecated' >&2; echo 'x.cc:2: note: here' >&2; exit 1\n"
    )
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    with pytest.raises(RuntimeError, match="exited with 1: h.h:740: error: expected initializer$"):
        fused_kernels.build(str(tmp_path / "cache" / "lib.so"))
    assert os.listdir(tmp_path / "cache") == []


def test_search_without_a_compiler_stops_with_one_line(tiny_folder, tmp_path):
    """``--fused_kernels=native`` where the kernels cannot be built: a failed run (exit 1),
    one ``error:`` line naming the flag, and no output folder."""
    out = tmp_path / "search"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "scripts", "search.py"),
        "--dataset=folder",
        f"--data_dir={tiny_folder}",
        f"--output_dir={out}",
        "--epochs=1",
        "--batch_size=8",
        "--init_channels=4",
        "--layers=3",
        "--nodes=1",
        "--groups=2",
        "--fused_kernels=native",
    ]
    env = dict(os.environ, CXX="false")
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=RUN_TIMEOUT)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1, result.stderr
    assert len(errors) == 1 and "--fused_kernels=native: cannot build" in errors[0]
    assert "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())
