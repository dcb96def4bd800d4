"""Export: a small trained model through LCE (LceBconv2d present, outputs as Keras) and TFLite."""

import bats_tf  # noqa: F401

# isort: split
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_folder_dataset
from test_metrics import DIL_REDUCE

from bats_tf import data, export, network, ops, training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model path, data root): bats_paper, C=64 in 2 groups (32 channels per group), trained."""
    root = make_folder_dataset(
        tmp_path_factory.mktemp("data"), per_class=18, splits=("train", "test"), noise=60
    )
    out = str(tmp_path_factory.mktemp("run"))
    cfg = training.TrainConfig(
        genotype="bats_paper",
        dataset="folder",
        data_dir=root,
        val_split="test",
        init_channels=64,
        layers=3,
        groups=2,
        stages=(2,),
        epochs=1,
        batch_size=18,
        strict_lce=True,
        verbose=0,
    )
    training.train(cfg, out)
    return os.path.join(out, training.MODEL_FILE), root


def test_export_small_trained_model(trained, tmp_path):
    path, root = trained
    model = training.load_model(path)
    raw, info = data.load_split("folder", "test", root)
    images = np.concatenate([x.numpy() for x, _ in data.pipeline(raw, info, 54, False)])
    report = export.export(model, str(tmp_path), images, threads=(1, 2), runs=3)
    binary = len(network.binary_convs(model))
    assert binary == 21 and report["binary_convs"] == binary
    assert report["lce_bconv2d"] == report["ops"]["lce"]["LceBconv2d"] == binary
    assert "LceBconv2d" not in report["ops"]["float"] and report["ops"]["float"]["CONV_2D"] > binary
    assert report["lce_vs_keras"]["top1_agreement"] >= 0.95
    assert report["float_vs_keras"]["top1_agreement"] >= 0.95
    assert report["size_bytes"]["lce"] * 5 < report["size_bytes"]["float"]
    assert set(report["latency_ms"]["lce"]) == {"1", "2"}
    assert all(v > 0 for v in report["latency_ms"]["float"].values())
    for name in (export.FLOAT_FILE, export.LCE_FILE, export.REPORT_FILE):
        assert os.path.getsize(tmp_path / name) > 0
    with open(tmp_path / export.REPORT_FILE) as f:
        assert json.load(f)["images"] == 54
    text = export.format_report(report)
    assert "LceBconv2d: 21 for 21 binary convs" in text and "latency 2 thr" in text
    # per image, LCE gives Keras's logits (an activation right at a sign threshold may flip)
    keras = model.predict(images, verbose=0)
    lce = export.lce_interpreter((tmp_path / export.LCE_FILE).read_bytes(), 2).predict(images)
    close = np.abs(keras - lce).max(-1) < 1e-3 * (1 + np.abs(keras).max())
    assert close.mean() >= 0.9


def test_lce_converts_the_strided_dilated_convs():
    """The dilated convs of the reduction cells, run undilated on subsampled inputs, are
    ``LceBconv2d`` ops in the LCE flatbuffer and give Keras's outputs."""
    model = network.build_network(
        DIL_REDUCE, 10, 16, init_channels=64, layers=3, groups=2, strict_lce=True
    )
    rng = np.random.RandomState(0)
    for layer in model.layers:  # distinct BatchNorms, as after training
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            shapes = [w.shape for w in layer.get_weights()]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, shapes[0]), 0.1 * rng.randn(*shapes[1])]
                + [0.1 * rng.randn(*shapes[2]), rng.uniform(0.5, 1.5, shapes[3])]
            )
    subsampled = [layer for layer in model.layers if isinstance(layer, ops.Subsample)]
    convs = [layer.outbound_nodes[0].outbound_layer for layer in subsampled]
    assert len(convs) == 4 and all(c in network.binary_convs(model) for c in convs)
    assert all(c.dilation_rate == (1, 1) and c.strides == (1, 1) for c in convs)
    flatbuffer = export.lce_flatbuffer(model)
    counts = export.tflite_op_counts(flatbuffer)
    assert counts[export.BCONV] == export.check_bconvs(model, counts) == 13
    assert counts["STRIDED_SLICE"] >= 4 and "SPACE_TO_BATCH_ND" not in counts
    images = rng.uniform(-1.0, 1.0, (8, 16, 16, 3)).astype("float32")
    keras = model.predict(images, verbose=0)
    lce = export.lce_interpreter(flatbuffer).predict(images)
    close = np.abs(keras - lce).max(-1) < 1e-3 * (1 + np.abs(keras).max())
    assert close.mean() >= 0.875


def test_export_fails_loudly_when_convs_stay_float(tmp_path):
    model = network.build_network("bats_paper", 10, 16, init_channels=48, layers=1, groups=3)
    with pytest.raises(export.ExportError, match="LceBconv2d ops for 8 binary convs"):
        export.export(model, str(tmp_path), np.zeros((1, 16, 16, 3), "float32"), runs=1)
    assert not os.path.exists(tmp_path / export.LCE_FILE)


@pytest.mark.slow
def test_export_script(trained, tmp_path):
    path, root = trained
    out = str(tmp_path / "export")
    args = [f"--model={path}", "--dataset=folder", f"--data_dir={root}", f"--output_dir={out}"]
    run = subprocess.run(
        [sys.executable, "scripts/export.py", *args, "--num_images=20", "--runs=2"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "LceBconv2d: 21 for 21 binary convs" in run.stdout
    with open(os.path.join(out, export.REPORT_FILE)) as f:
        assert json.load(f)["images"] == 20
