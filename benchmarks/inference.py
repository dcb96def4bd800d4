"""The ``inference`` part: the LCE flatbuffer beside its float TFLite twin, at batch 1."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.arithmetic import forward_flops
from benchmarks.inputs import IMAGE_SIZE, NUM_CLASSES, random_batch
from benchmarks.machine import load_average

DEPLOY = dict(init_channels=64, layers=8, groups=1)  # every binary conv becomes LceBconv2d
QUICK_DEPLOY = dict(init_channels=32, layers=3, groups=1)


def latencies(float_fb: bytes, lce_fb: bytes, image, threads=(1, 2), runs=30) -> dict:
    """Median batch-1 latency (ms) per thread count: float TFLite with XNNPACK, and LCE with
    (``lce``) and without (``lce_no_xnnpack``) XNNPACK for its float ops."""
    import larq_compute_engine as lce

    from bats_tf import export

    image = np.ascontiguousarray(image[None], np.float32)
    result = {"float": {}, "lce": {}, "lce_no_xnnpack": {}}
    for n in threads:
        f = export.float_interpreter(float_fb, n)
        inp = f.get_input_details()[0]["index"]

        def run_float(f=f, inp=inp):
            f.set_tensor(inp, image)
            f.invoke()

        result["float"][str(n)] = export.median_ms(run_float, runs)
        for key, xnnpack in (("lce", True), ("lce_no_xnnpack", False)):
            r = lce.testing.Interpreter(
                lce_fb, num_threads=n, use_indirect_bgemm=True, use_xnnpack=xnnpack
            ).interpreter
            result[key][str(n)] = export.median_ms(lambda r=r: r.predict([image]), runs)
    return result


def trained_like(model, seed: int = 0) -> None:
    """Gives every BatchNorm and PReLU random, distinct parameters, as training would.

    At initialisation all of them are equal, so the converters merge the identical
    BN -> sign -> pad chains of two edges that read one state with one dilated op, and the
    shared ``SpaceToBatchND`` keeps LCE from recognising the dilated binary conv.
    """
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            values = [
                rng.uniform(0.5, 1.5, w.shape)
                if "gamma" in w.name or "variance" in w.name
                else rng.normal(0.0, 0.1, w.shape)
                for w in layer.weights
            ]
            layer.set_weights(values)
        elif isinstance(layer, tf.keras.layers.PReLU):
            layer.set_weights([rng.uniform(0.05, 0.45, w.shape) for w in layer.weights])


def inference_part(size: dict, runs=30, threads=(1, 2), log=print) -> dict:
    """The ``bats_paper`` network (trained-like BN and PReLU parameters) exported to LCE and
    float TFLite, timed at batch 1."""
    import tensorflow as tf

    from bats_tf import export, network

    tf.keras.backend.clear_session()
    log(f"inference C={size['init_channels']} layers={size['layers']} g={size['groups']} ...")
    model = network.build_network(
        "bats_paper",
        NUM_CLASSES,
        IMAGE_SIZE,
        init_channels=size["init_channels"],
        layers=size["layers"],
        groups=size["groups"],
        strict_lce=True,
    )
    trained_like(model)
    start = time.perf_counter()
    float_fb = export.float_tflite(model)
    lce_fb = export.lce_flatbuffer(model)
    convert_s = time.perf_counter() - start
    counts = export.tflite_op_counts(lce_fb)
    try:
        export.check_bconvs(model, counts)
        deploy_error = None
    except export.ExportError as e:  # timed all the same, and reported
        deploy_error = str(e)
    image = random_batch(1, 0)[0][0]
    latency = latencies(float_fb, lce_fb, image, threads, runs)
    res = dict(
        size,
        genotype="bats_paper",
        binary_convs=len(network.binary_convs(model)),
        lce_bconv2d=counts.get(export.BCONV, 0),
        lce_ops=counts,
        deploy_error=deploy_error,
        size_bytes={"float": len(float_fb), "lce": len(lce_fb)},
        latency_ms=latency,
        runs=runs,
        convert_s=convert_s,
        forward_gflop_per_image=forward_flops(model) / 1e9,
        load=load_average(),
    )
    res["lce_speedup"] = {n: latency["float"][n] / latency["lce"][n] for n in latency["float"]}
    res["size_ratio"] = len(float_fb) / len(lce_fb)
    return res
