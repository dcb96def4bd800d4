"""The search loop: a short real search, outputs, repeatability and exact resume."""

import bats_tf  # noqa: F401

# isort: split
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_search_config

from bats_tf.genotype import Genotype
from bats_tf.search import Searcher


def _config(data_dir, **kw):
    return tiny_search_config(data_dir, **{"batch_size": 4, **kw})  # 3 steps per epoch


def _alphas(out):
    with open(os.path.join(out, "alphas.json")) as f:
        a = json.load(f)
    return np.array(a["alpha_normal"]), np.array(a["alpha_reduce"])


@pytest.mark.slow
def test_short_search_writes_genotype_diagrams_and_logs(tiny_folder, tmp_path):
    out = str(tmp_path / "run")
    searcher = Searcher(_config(tiny_folder), out, log=lambda *_: None)
    genotype = searcher.run()
    assert Genotype.load(os.path.join(out, "genotype.json")) == genotype
    for name in ("normal.png", "normal.svg", "reduce.png", "reduce.svg", "history.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    assert sorted(os.listdir(os.path.join(out, "genotypes"))) == [
        "epoch_001.json",
        "epoch_002.json",
    ]
    assert any(f.startswith("events.out") for f in os.listdir(os.path.join(out, "tb")))
    with open(os.path.join(out, "history.json")) as f:
        history = json.load(f)
    assert [h["epoch"] for h in history] == [1, 2]
    assert all(np.isfinite(h["w_loss"]) and 0 <= h["a_acc"] <= 1 for h in history)
    # The architecture moved away from its initialisation (scale 1e-3).
    normal, reduce = _alphas(out)
    assert np.abs(normal).max() > 1e-2 and np.abs(reduce).max() > 1e-2


@pytest.mark.slow
def test_same_seed_same_result_and_resume_is_exact(tiny_folder, tmp_path):
    cfg = _config(tiny_folder, checkpoint_every=1000)
    full = str(tmp_path / "full")
    g_full = Searcher(cfg, full, log=lambda *_: None).run()

    cut = str(tmp_path / "cut")
    first = Searcher(cfg, cut, log=lambda *_: None)
    steps = first.steps_per_epoch
    assert first.run(stop_at=steps + 1) is None  # stops mid-way through epoch 2
    assert not os.path.exists(os.path.join(cut, "normal.png"))  # written at the very end
    tf.keras.backend.clear_session()
    g_cut = Searcher(cfg, cut, log=lambda *_: None).run()

    assert g_cut == g_full
    for a, b in zip(_alphas(full), _alphas(cut)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with open(os.path.join(cut, "history.json")) as f:
        assert [h["epoch"] for h in json.load(f)] == [1, 2]


@pytest.mark.slow
def test_search_with_teacher_and_second_order(tiny_folder, tmp_path):
    teacher = tf.keras.Sequential(
        [tf.keras.Input((16, 16, 3)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(3)]
    )
    path = str(tmp_path / "teacher.keras")
    teacher.save(path)
    cfg = _config(tiny_folder, epochs=1, teacher=path, kd_weight=0.5, order="second")
    genotype = Searcher(cfg, str(tmp_path / "kd"), log=lambda *_: None).run()
    assert genotype.search_space == "bats" and genotype.nodes == 2


def test_lean_grappler_reaches_the_function_call_config():
    """The passes it turns off are off in the config tf.function calls run with (a fresh
    process: the settings last for the rest of a process)."""
    code = (
        "import bats_tf\n"
        "import tensorflow as tf\n"
        "from tensorflow.core.protobuf import config_pb2\n"
        "from tensorflow.python.eager import context\n"
        "from bats_tf import search\n"
        "search.use_lean_grappler()\n"
        "raw = context.context().function_call_options.config_proto_serialized\n"
        "r = config_pb2.ConfigProto.FromString(raw).graph_options.rewrite_options\n"
        "print(r.memory_optimization == r.NO_MEM_OPT)\n"
        "print(r.layout_optimizer == r.OFF, r.remapping == r.OFF)\n"
        "print(float(tf.function(lambda x: tf.reduce_sum(x * x))(tf.ones([3]))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["True", "True", "True", "3.0"]
