"""float32 against bfloat16 binary convolutions (:mod:`bats_tf.precision`), side by side.

Each shape runs forward and forward + backward in both formats, taking turns; a figure's
rate is also given as a fraction of the matmul peak of the format it runs in. Then the
fully binary network (training stage 2) trains a step in both formats.
"""

from __future__ import annotations

import numpy as np

from benchmarks.evalnet import _alternate, keras_train_step
from benchmarks.inputs import IMAGE_SIZE, NUM_CLASSES
from benchmarks.machine import load_average

# (batch, size, channels, groups): the ungrouped convs of a deployable network and the
# narrow groups of a search.
CONVS = {
    "B64_32x32_C128_g1": (64, 32, 128, 1),
    "B64_16x16_C256_g1": (64, 16, 256, 1),
    "B64_32x32_C64_g16": (64, 32, 64, 16),
}
QUICK_CONVS = {"B4_8x8_C64_g1": (4, 8, 64, 1)}
NETWORKS = {"C64_L8_G1": dict(init_channels=64, layers=8, groups=1, batch=64)}
QUICK_NETWORKS = {"C16_L3_G1": dict(init_channels=16, layers=3, groups=1, batch=4)}


def _conv_runners(batch, size, channels, groups):
    import tensorflow as tf

    from bats_tf import precision

    rng = np.random.RandomState(0)
    x = tf.Variable(np.sign(rng.randn(batch, size, size, channels)).astype("float32"))
    w = tf.Variable(np.sign(rng.randn(3, 3, channels // groups, channels)).astype("float32"))
    convs = {"float32": tf.nn.conv2d, "bfloat16": precision.binary_conv2d}
    runners = {}
    for name, conv in convs.items():
        forward = tf.function(lambda conv=conv: tf.reduce_sum(conv(x, w, 1, "SAME")))

        @tf.function
        def both(conv=conv):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(conv(x, w, 1, "SAME"))) * 1e-6
            return tape.gradient(loss, [x, w])

        runners[f"{name}_forward"] = (lambda f=forward: f().numpy(), batch)
        runners[f"{name}_train"] = (lambda f=both: [g.numpy() for g in f()], batch)
    return runners


def precision_part(
    peaks: dict, convs=CONVS, networks=NETWORKS, repeats=3, steps=3, log=print
) -> dict:
    """Images/s of each format per conv shape and per network; ``peaks`` holds the matmul
    GFLOP/s of each format (``{"float32": ..., "bfloat16": ...}``)."""
    import tensorflow as tf

    from bats_tf import network
    from benchmarks.arithmetic import TRAIN_PASSES, forward_flops

    results = {"peaks_gflops": peaks, "convs": {}, "networks": {}}
    for name, (batch, size, channels, groups) in convs.items():
        log(f"precision conv {name} (load {load_average()[0]}) ...")
        runners = _conv_runners(batch, size, channels, groups)
        for runner in runners.values():
            runner[0]()  # warm-up and trace
        res = _alternate(runners, repeats, steps)
        gflop = 2.0 * size * size * 9 * channels * (channels // groups) / 1e9  # per image
        for key, fig in res.items():
            fmt, kind = key.split("_")
            fig["gflops"] = fig["images_per_s"] * gflop * (1 if kind == "forward" else 3)
            fig["fraction_of_peak"] = fig["gflops"] / peaks[fmt] if peaks.get(fmt) else None
        for kind in ("forward", "train"):
            res[f"speedup_{kind}"] = (
                res[f"bfloat16_{kind}"]["images_per_s"] / res[f"float32_{kind}"]["images_per_s"]
            )
        results["convs"][name] = res
    for name, size in networks.items():
        log(f"precision network {name} (load {load_average()[0]}) ...")
        runners, gflop = {}, None
        for fmt in ("float32", "bfloat16"):
            tf.keras.backend.clear_session()
            model = network.build_network(
                "bats_paper",
                NUM_CLASSES,
                IMAGE_SIZE,
                init_channels=size["init_channels"],
                layers=size["layers"],
                groups=size["groups"],
                precision=fmt,
            )
            gflop = forward_flops(model) / 1e9 * TRAIN_PASSES
            step = keras_train_step(model, size["batch"])
            step()  # warm-up and trace
            runners[fmt] = (step, size["batch"])
        res = _alternate(runners, repeats, 1)
        for fmt, fig in res.items():
            if fmt in ("float32", "bfloat16"):
                fig["gflops"] = fig["images_per_s"] * gflop
        res["speedup"] = res["bfloat16"]["images_per_s"] / res["float32"]["images_per_s"]
        results["networks"][name] = dict(size, **res)
    return results
