"""Deployment: float TFLite and Larq Compute Engine (LCE) flatbuffers, checked and timed.

:func:`export` converts a trained model both ways, counts the ops of each flatbuffer (parsed
with the TFLite schema), fails if LCE made fewer ``LceBconv2d`` ops than the model has binary
convolutions, compares LCE outputs with Keras on real images, and times both at batch 1 with
1 and 2 threads, each with the same delegate: XNNPACK for float ops (TFLite's default; LCE's
interpreter takes it too, beside its indirect BGEMM kernel, which x86 needs for grouped binary
convolutions).
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import collections
import os
import tempfile
import time
import warnings

import larq_compute_engine as lce
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema

from bats_tf import network
from bats_tf.io_utils import atomic_write_bytes, atomic_write_json
from bats_tf.widths import LCE_CHANNELS

BCONV = "LceBconv2d"
FLOAT_FILE, LCE_FILE, REPORT_FILE = "model_float.tflite", "model_lce.tflite", "export.json"
_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


class ExportError(RuntimeError):
    """The converted model is not what deployment needs (e.g. binary convs left in float)."""


def serving_saved_model(model, folder: str) -> None:
    """A SavedModel of only the inference function at batch 1 (and the weights it reads).

    Both converters read it. It holds the graph ``convert_keras_model`` would convert, but
    skips tf-keras's per-layer SavedModel tracing (about 10x faster on a 3-cell network).
    """
    module = tf.Module()
    module.weights = list(model.weights)
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32, name="images")
    module.serve = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    tf.saved_model.save(module, folder, signatures=module.serve)


def _with_saved_model(model, convert) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        serving_saved_model(model, folder)
        return convert(folder)


def float_tflite(model) -> bytes:
    """The model as a float32 TFLite flatbuffer."""
    return _with_saved_model(model, lambda d: tf.lite.TFLiteConverter.from_saved_model(d).convert())


def lce_flatbuffer(model) -> bytes:
    """The model converted by LCE (binary convs become ``LceBconv2d``)."""
    return _with_saved_model(model, lce.convert_saved_model)


def tflite_op_counts(flatbuffer: bytes) -> dict[str, int]:
    """Number of ops of each type (builtin name, or custom code such as ``LceBconv2d``)."""
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(flatbuffer, 0))
    counts = collections.Counter()
    for subgraph in model.subgraphs:
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            if code.customCode:
                counts[code.customCode.decode()] += 1
            else:
                builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
                counts[_BUILTIN_NAMES.get(builtin, str(builtin))] += 1
    return dict(sorted(counts.items()))


def check_bconvs(model, counts: dict[str, int]) -> int:
    """Raises :class:`ExportError` unless every binary conv became an ``LceBconv2d``."""
    expected = len(network.binary_convs(model))
    found = counts.get(BCONV, 0)
    if found < expected:
        missed = network.lce_compatibility(model)
        names = ", ".join(f"{m['layer']} ({m['reason']})" for m in missed[:6])
        reason = (
            f"LCE needs a multiple of {LCE_CHANNELS} input channels per group: {names}"
            if names
            else "no layer breaks its channel rule; a known cause is two dilated convs on one "
            "input whose BatchNorms are identical (untrained): their merged SpaceToBatchND "
            "cannot be fused"
        )
        raise ExportError(
            f"LCE made {found} {BCONV} ops for {expected} binary convs; the rest run in float. "
            + reason
        )
    return expected


def lce_interpreter(flatbuffer: bytes, threads: int = 1):
    """LCE's interpreter with XNNPACK for the float ops, as TFLite's float interpreter."""
    return lce.testing.Interpreter(
        flatbuffer, num_threads=threads, use_indirect_bgemm=True, use_xnnpack=True
    )


def float_interpreter(flatbuffer: bytes, threads: int = 1):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of tf.lite.Interpreter
        interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def float_predict(interpreter, images: np.ndarray) -> np.ndarray:
    """Outputs of a float TFLite interpreter, one image at a time."""
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    results = []
    for image in images:
        interpreter.set_tensor(inp, image[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out)[0])
    return np.stack(results)


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """Top-1 agreement and largest absolute difference of two sets of logits."""
    return {
        "top1_agreement": float(np.mean(reference.argmax(-1) == other.argmax(-1))),
        "max_abs_diff": float(np.max(np.abs(reference - other))),
    }


def median_ms(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def network_latency_ms(
    model, runs: int = 50, threads: int = 1, seed: int = 0, rounds: int = 5
) -> float:
    """LCE's batch-1 latency (ms) of a network's architecture, trained or not: the smallest
    median of ``rounds`` rounds of ``runs`` (a shared machine's speed drifts, up to 2x over
    seconds on a 2-core VM; the fastest round is the network's own cost).

    Weights do not change the time, but identical BatchNorms (an untrained network's) let
    the converter merge two dilated convs into one SpaceToBatchND that it cannot fuse into
    ``LceBconv2d``; so each BatchNorm of ``model`` gets random statistics first (``model``
    is changed).
    """
    rng = np.random.RandomState(seed)
    for layer in network.flat_layers(model):
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
    flatbuffer = lce_flatbuffer(network.inference_model(model))
    image = rng.uniform(-1.0, 1.0, (1, *model.inputs[0].shape[1:])).astype("float32")
    run = lce_interpreter(flatbuffer, threads).interpreter
    return min(median_ms(lambda: run.predict([image]), runs) for _ in range(rounds))


def latencies(float_fb: bytes, lce_fb: bytes, image, threads=(1, 2), runs=30) -> dict:
    """Median batch-1 latency (ms) of each flatbuffer per thread count, both with XNNPACK."""
    image = np.ascontiguousarray(image[None], np.float32)
    result = {"float": {}, "lce": {}}
    for n in threads:
        f = float_interpreter(float_fb, n)
        inp = f.get_input_details()[0]["index"]
        out = f.get_output_details()[0]["index"]

        def run_float(f=f, inp=inp, out=out):
            f.set_tensor(inp, image)
            f.invoke()
            return f.get_tensor(out)

        lce_run = lce_interpreter(lce_fb, n).interpreter
        result["float"][str(n)] = median_ms(run_float, runs)
        result["lce"][str(n)] = median_ms(lambda r=lce_run: r.predict([image]), runs)
    return result


def export(model, output_dir: str, images: np.ndarray, threads=(1, 2), runs=30, strict=True):
    """Writes both flatbuffers and ``export.json``; returns the report.

    ``images`` are preprocessed model inputs (real images) for the output comparison.
    ``strict`` raises :class:`ExportError` if LCE left binary convs in float.
    """
    model = network.inference_model(model)
    lce_fb = lce_flatbuffer(model)
    binary = len(network.binary_convs(model))
    if strict:
        check_bconvs(model, tflite_op_counts(lce_fb))
    float_fb = float_tflite(model)
    counts = {"float": tflite_op_counts(float_fb), "lce": tflite_op_counts(lce_fb)}
    atomic_write_bytes(os.path.join(output_dir, FLOAT_FILE), float_fb)
    atomic_write_bytes(os.path.join(output_dir, LCE_FILE), lce_fb)
    keras_logits = model.predict(images, batch_size=64, verbose=0)
    lce_logits = lce_interpreter(lce_fb).predict(images)
    float_logits = float_predict(float_interpreter(float_fb), images)
    report = {
        "binary_convs": binary,
        "lce_bconv2d": counts["lce"].get(BCONV, 0),
        "ops": counts,
        "size_bytes": {"float": len(float_fb), "lce": len(lce_fb)},
        "images": int(len(images)),
        "lce_vs_keras": agreement(keras_logits, lce_logits),
        "float_vs_keras": agreement(keras_logits, float_logits),
        "latency_ms": latencies(float_fb, lce_fb, images[0], threads, runs),
        "runs": runs,
    }
    atomic_write_json(os.path.join(output_dir, REPORT_FILE), report)
    return report


def float_convs(report: dict) -> str:
    """What the report's binary convs left in float cost, in words ("" if none)."""
    left = report["binary_convs"] - report["lce_bconv2d"]
    if left <= 0:
        return ""
    return (
        f" ({left} run in float: LCE needs a multiple of {LCE_CHANNELS} input channels per "
        "group; --deployable networks have none)"
    )


def format_report(report: dict) -> str:
    """The figures of float TFLite and LCE side by side."""
    lat, size = report["latency_ms"], report["size_bytes"]
    rows = [("", "float TFLite", "LCE"), ("size (KiB)", *(f"{size[k] / 1024:.1f}" for k in size))]
    for n in lat["float"]:
        rows.append((f"latency {n} thr (ms)", f"{lat['float'][n]:.2f}", f"{lat['lce'][n]:.2f}"))
    rows.append(
        ("ops", str(sum(report["ops"]["float"].values())), str(sum(report["ops"]["lce"].values())))
    )
    lines = [f"{a:<22}{b:>14}{c:>14}" for a, b, c in rows]
    a, f = report["lce_vs_keras"], report["float_vs_keras"]
    lines += [
        f"{BCONV}: {report['lce_bconv2d']} for {report['binary_convs']} binary convs"
        + float_convs(report),
        f"LCE vs Keras on {report['images']} images: top-1 agreement "
        f"{100 * a['top1_agreement']:.1f}%, max |logit diff| {a['max_abs_diff']:.2e}",
        f"float TFLite vs Keras: top-1 agreement {100 * f['top1_agreement']:.1f}%, "
        f"max |logit diff| {f['max_abs_diff']:.2e}",
        "LCE ops: " + ", ".join(f"{k}={v}" for k, v in report["ops"]["lce"].items()),
    ]
    return "\n".join(lines)
