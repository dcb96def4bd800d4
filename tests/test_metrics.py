"""MAC counts (by hand and from layer shapes) and evaluation on a folder dataset."""

import bats_tf  # noqa: F401

# isort: split
import json
import os
import subprocess
import sys

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_folder_dataset

from bats_tf import data, metrics, network, ops, training
from benchmarks import arithmetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_hand_counted_macs():
    binary = dict(input_quantizer="ste_sign", use_bias=False, padding="same")
    x = tf.keras.Input((8, 8, 16))
    y = ops.GroupedQuantConv2D(32, 3, groups=2, kernel_quantizer="ste_sign", **binary)(x)
    y = lq.layers.QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign", **binary)(y)
    y = lq.layers.QuantConv2D(16, 1, input_quantizer="ste_sign", use_bias=False)(y)  # real kernel
    y = tf.keras.layers.GlobalAveragePooling2D()(y)
    model = tf.keras.Model(x, tf.keras.layers.Dense(10)(y))
    got = metrics.complexity(model)
    bops = 8 * 8 * 32 * (3 * 3 * 8) + 8 * 8 * 32 * (3 * 3)
    flops = 8 * 8 * 16 * 32 + 16 * 10
    assert (got["bops"], got["flops"]) == (bops, flops)
    assert got["ops"] == bops / 64 + flops
    assert got["binary_params"] == 3 * 3 * 8 * 32 + 3 * 3 * 32
    assert got["params"] == model.count_params() == got["binary_params"] + got["real_params"]


@pytest.mark.parametrize(
    "name, kw",
    [
        ("bats_paper", dict(init_channels=32, groups=1)),
        ("bats_paper", dict(init_channels=32, groups=1, weights="real")),  # stage 1
        ("random:2", dict(init_channels=16, groups=4, auxiliary=True)),
        ("darts_v2", dict(init_channels=16, search_space="darts_binary")),
        ("darts_v2", dict(init_channels=16)),
        ("random:1", dict(init_channels=32, groups=2, structure="imagenet")),
    ],
)
def test_network_macs_match_a_count_from_layer_shapes(name, kw):
    size = 64 if kw.get("structure") == "imagenet" else 32
    model = network.build_network(name, 10, size, layers=3, **kw)
    got = metrics.complexity(model)
    by_shapes = sum(arithmetic._macs(layer) for layer in network.flat_layers(model))
    assert got["bops"] + got["flops"] == by_shapes
    if kw.get("weights") == "real" or name == "darts_v2" and "search_space" not in kw:
        assert got["bops"] == 0
    else:
        assert got["bops"] > got["flops"] > 0
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    assert "MACs" in "\n".join(lines)


def test_evaluate_on_a_folder_split(tmp_path):
    root = make_folder_dataset(
        tmp_path / "data", per_class=8, splits=("holdout_v2",), seed=1, noise=255, ext="jpg"
    )
    model = network.build_network("random:0", 3, 16, init_channels=8, layers=3, groups=1)
    path = str(tmp_path / "model.keras")
    training.save_model(model, path)
    raw, info = data.load("folder", "holdout_v2", root)
    ds = data.pipeline(raw, info, 10, training=False)
    result = metrics.evaluate(model, ds)
    logits = np.concatenate([model(x, training=False).numpy() for x, _ in ds])
    labels = np.concatenate([y.numpy() for _, y in ds])
    assert result["examples"] == 24
    assert result["top1"] == pytest.approx(np.mean(logits.argmax(-1) == labels))
    assert result["top5"] == 1.0  # 3 classes: always in the top 3
    out = str(tmp_path / "eval" / "result.json")
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "evaluate.py"),
            f"--model={path}",
            "--dataset=folder",
            f"--data_dir={root}",
            "--split=holdout_v2",
            f"--output={out}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    with open(out) as f:
        written = json.load(f)
    for key in ("top1", "top5", "loss"):
        assert written[key] == pytest.approx(result[key], abs=1e-5)
    assert written["bops"] == metrics.complexity(model)["bops"] > 0
    assert written["split"] == "holdout_v2" and '"ops"' in run.stdout
    bad = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--model=/no/such.keras"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "--model=/no/such.keras" in bad.stderr.strip().splitlines()[-1]
