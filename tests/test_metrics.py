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
from bats_tf.genotype import Genotype
from bats_tf.op_specs import OP_SPECS
from benchmarks import arithmetic

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Two-node cells; the reduction cell has dilated convs at stride 2 (from states 0 and 1) and
# at stride 1 (from node 0).
DIL_REDUCE = Genotype(
    normal=(("group_conv_3x3", 0), ("skip_connect", 1), ("max_pool_3x3", 2), ("group_conv_5x5", 1)),
    normal_concat=(2, 3),
    reduce=(
        ("dil_group_conv_3x3", 0),
        ("dil_group_conv_5x5", 1),
        ("dil_group_conv_5x5", 2),
        ("avg_pool_3x3", 0),
    ),
    reduce_concat=(2, 3),
    search_space="bats",
)


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
        ("random:26", dict(init_channels=16, groups=2)),  # 4 strided dilated convs
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


def _macs_by_hand(genotype, size, c, groups, classes=10):
    """(binary, real) MACs of the 3-cell CIFAR network of a BATS ``genotype`` (cells: normal,
    reduction, reduction) from the cell structure alone: every op of a reduction cell,
    dilated or not, outputs half its input resolution and costs the MACs of its output."""
    binary, real = 0, size * size * 3 * c * 3 * 3 * 3  # the stem
    s0 = s1 = (3 * c, size)  # (channels, resolution) of the cell inputs
    reduction_prev = False
    for channels, reduction in ((c, False), (2 * c, True), (4 * c, True)):
        res = s1[1]
        if reduction_prev:  # factorized reduce: two real 1x1 convs at stride 2
            real += res * res * s0[0] * channels
        else:  # binary 1x1 preprocess
            binary += s0[1] ** 2 * s0[0] * channels
        binary += res * res * s1[0] * channels
        out = res // 2 if reduction else res
        edges, concat = genotype.cell(reduction)
        for op, _ in edges:
            spec = OP_SPECS[op]
            if spec.kind == "group_conv":
                binary += out * out * channels * spec.kernel**2 * channels // groups
        s0, s1, reduction_prev = s1, (len(concat) * channels, out), reduction
    return binary, real + s1[0] * classes


def test_strided_dilated_convs_count_at_the_reduced_resolution():
    """A dilated conv at stride 2 costs the MACs of its output: a quarter of those of the
    full-resolution conv whose output it subsamples."""
    c, groups = 16, 2
    model = network.build_network(DIL_REDUCE, 10, 16, init_channels=c, layers=3, groups=groups)
    got = metrics.complexity(model)
    assert (got["bops"], got["flops"]) == _macs_by_hand(DIL_REDUCE, 16, c, groups)
    assert got["ops"] == got["bops"] / 64 + got["flops"]
    subsampled = [layer for layer in model.layers if isinstance(layer, ops.Subsample)]
    assert len(subsampled) == 4  # the dilated convs from states 0 and 1 of both reductions
    convs = [layer.outbound_nodes[0].outbound_layer for layer in subsampled]
    assert all(conv in network.binary_convs(model) for conv in convs)


def test_evaluate_on_a_folder_split(tmp_path):
    root = make_folder_dataset(
        tmp_path / "data", per_class=8, splits=("holdout_v2",), seed=1, noise=255, ext="jpg"
    )
    # Real-valued: an untrained binary network's near-zero inputs flip signs between two
    # processes' float summation orders, and its loss with them.
    model = network.build_network(
        "random:0", 3, 16, init_channels=8, layers=3, groups=1, activations="real", weights="real"
    )
    path = str(tmp_path / "model.keras")
    training.save_model(model, path)
    raw, info = data.load_split("folder", "holdout_v2", root)
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
    assert written["ops"] == pytest.approx(metrics.complexity(model)["ops"]) and written["ops"] > 0
    assert written["split"] == "holdout_v2" and '"ops"' in run.stdout
    bad = subprocess.run(
        [sys.executable, "scripts/evaluate.py", "--model=/no/such.keras"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "--model=/no/such.keras" in bad.stderr.strip().splitlines()[-1]
