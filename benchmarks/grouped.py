"""Two formulations of the search's grouped convolutions, side by side: TensorFlow's grouped
``tf.nn.conv2d`` (what the fused supernet runs) against one dense convolution with a
block-diagonal kernel (``groups`` times the arithmetic, in the hope that matrix units run
it several times faster), forward + backward, in float32 and bfloat16.

The shapes are the fused paper-scale search cell's (:data:`benchmarks.supernet.SUPERNETS`
``paper``: C=16, 4 groups, batch 64): every edge leaving a state shares one grouped conv,
``c_in`` channels in, 4 edges x C out, at each stage's resolution.
"""

from __future__ import annotations

import numpy as np

from benchmarks.evalnet import _alternate
from benchmarks.machine import load_average

# name: (batch, size, c_in, c_out, groups)
SHAPES = {
    "B64_32x32_16to64_g4": (64, 32, 16, 64, 4),
    "B64_16x16_32to128_g4": (64, 16, 32, 128, 4),
    "B64_8x8_64to256_g4": (64, 8, 64, 256, 4),
}
QUICK_SHAPES = {"B4_8x8_16to64_g4": (4, 8, 16, 64, 4)}
FORMATS = ("float32", "bfloat16")
FORMULATIONS = ("grouped", "block_diagonal")


def block_diagonal(kernel: np.ndarray, groups: int) -> np.ndarray:
    """The dense ``(k, k, c_in, c_out)`` kernel of a grouped ``(k, k, c_in / groups, c_out)``
    one: group ``i``'s block at input rows ``i`` and output columns ``i``, zeros elsewhere."""
    k, k2, cg, c_out = kernel.shape
    og = c_out // groups
    dense = np.zeros((k, k2, cg * groups, c_out), kernel.dtype)
    for i in range(groups):
        dense[:, :, i * cg : (i + 1) * cg, i * og : (i + 1) * og] = kernel[
            ..., i * og : (i + 1) * og
        ]
    return dense


def _runners(batch, size, c_in, c_out, groups):
    import tensorflow as tf

    rng = np.random.RandomState(0)
    x = rng.randn(batch, size, size, c_in).astype("float32")
    kernel = rng.randn(3, 3, c_in // groups, c_out).astype("float32")
    kernels = {"grouped": kernel, "block_diagonal": block_diagonal(kernel, groups)}
    runners = {}
    for fmt in FORMATS:
        xv = tf.Variable(tf.cast(x, fmt))
        for name, w in kernels.items():
            wv = tf.Variable(tf.cast(w, fmt))

            @tf.function
            def step(xv=xv, wv=wv):
                with tf.GradientTape() as tape:
                    y = tf.cast(tf.nn.conv2d(xv, wv, 1, "SAME"), tf.float32)
                    loss = tf.reduce_sum(tf.square(y)) * 1e-6
                return tape.gradient(loss, [xv, wv])

            runners[f"{fmt}/{name}"] = (lambda f=step: [g.numpy() for g in f()], batch)
    return runners


def grouped_part(peaks: dict, shapes=SHAPES, repeats=3, steps=3, log=print) -> dict:
    """Images/s of each formulation and format per shape, taking turns; ``peaks`` holds the
    matmul GFLOP/s of each format. GFLOP/s counts the useful (grouped) arithmetic."""
    results = {"peaks_gflops": peaks, "shapes": {}}
    for name, (batch, size, c_in, c_out, groups) in shapes.items():
        log(f"grouped conv {name} (load {load_average()[0]}) ...")
        runners = _runners(batch, size, c_in, c_out, groups)
        for runner in runners.values():
            runner[0]()  # warm-up and trace
        res = _alternate(runners, repeats, steps)
        gflop = 3 * 2.0 * size * size * 9 * (c_in // groups) * c_out / 1e9  # per image, 3 passes
        for key, fig in res.items():
            fmt = key.split("/")[0]
            fig["gflops"] = fig["images_per_s"] * gflop
            fig["fraction_of_peak"] = fig["gflops"] / peaks[fmt] if peaks.get(fmt) else None
        for fmt in FORMATS:
            res[f"{fmt}/block_diagonal_vs_grouped"] = (
                res[f"{fmt}/block_diagonal"]["images_per_s"] / res[f"{fmt}/grouped"]["images_per_s"]
            )
        results["shapes"][name] = res
    return results
