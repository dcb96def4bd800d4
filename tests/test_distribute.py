"""Several devices and machines: a MirroredStrategy search step on two logical CPUs matches
the single-device step; two local workers complete a multi-worker search and a training.

Logical devices must be configured before TensorFlow initialises them, so the device test
runs this file as a script in a subprocess; the workers are subprocesses of the scripts.
"""

import bats_tf  # noqa: F401

# isort: split
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import RUN_TIMEOUT, TINY_SEARCH, as_flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {**TINY_SEARCH, "epochs": 1, "batch_size": 8, "nodes": 1, "warmup_epochs": None}


def _state(searcher):
    return searcher.model.get_weights() + [a.numpy() for a in searcher.arch.alphas]


def _one_step(data_dir, out):
    """One search step on one device and under MirroredStrategy on two logical CPUs, from the
    same weights on the same batch; then the one-device run goes on to the end of the search.
    Saves weights and alphas (and step sums) to out/out.npz."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from bats_tf.search import SearchConfig, Searcher

    arrays, searchers = {}, {}
    for name in ("default", "mirrored"):
        cfg = SearchConfig(**TINY, data_dir=data_dir, strategy=name, checkpoint_every=1000)
        searcher = searchers[name] = Searcher(cfg, os.path.join(out, name), log=lambda *_: None)
        n = len(searcher.model.weights)
        if name == "default":
            start = _state(searcher)
        else:
            searcher.model.set_weights(start[:n])
            for a, value in zip(searcher.arch.alphas, start[n:]):
                a.assign(value)
        arrays[f"{name}_replicas"] = np.array(searcher.replicas)
        searcher.run(stop_at=1)
        arrays.update({f"{name}_{i}": v for i, v in enumerate(_state(searcher))})
        arrays[f"{name}_sums"] = searcher.sums.numpy()
    arrays.update({f"start_{i}": v for i, v in enumerate(start)})
    arrays["trainable"] = np.array([v.trainable for v in searchers["default"].model.weights])
    searchers["default"].run()
    with open(os.path.join(out, "default", "history.json")) as f:
        arrays["losses"] = np.array([[h["w_loss"], h["a_loss"]] for h in json.load(f)])
    np.savez(os.path.join(out, "out.npz"), **arrays)


@pytest.fixture(scope="module")
def one_device(tiny_folder, tmp_path_factory):
    """The arrays saved by ``_one_step`` (run in a subprocess with two logical CPUs)."""
    out = tmp_path_factory.mktemp("one_step")
    child = [sys.executable, __file__, "one_step", tiny_folder, str(out)]
    result = subprocess.run(child, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    return dict(np.load(out / "out.npz"))


@pytest.mark.slow
def test_mirrored_step_matches_the_single_device_step(one_device):
    """Weights, alphas and step sums agree; BatchNorm moving statistics only loosely, as the
    one-device fused BatchNorm updates them with the unbiased batch variance."""
    got = one_device
    assert got["default_replicas"] == 1 and got["mirrored_replicas"] == 2
    trainable = list(got["trainable"]) + [True, True]  # model weights, then the two alphas
    for i, exact in enumerate(trainable):
        rtol = 1e-4 if exact else 5e-3
        np.testing.assert_allclose(
            got[f"mirrored_{i}"], got[f"default_{i}"], rtol=rtol, atol=1e-5, err_msg=f"array {i}"
        )
    for i in (-2, -1):  # the alphas moved, so the match is not trivial
        i += len(trainable)
        assert np.abs(got[f"default_{i}"] - got[f"start_{i}"]).max() > 1e-3
    np.testing.assert_allclose(got["mirrored_sums"], got["default_sums"], rtol=1e-5)


def _free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _workers(commands, timeout=RUN_TIMEOUT):
    """Runs each command as one worker of a local cluster; returns their results."""
    hosts = [f"127.0.0.1:{p}" for p in _free_ports(len(commands))]
    procs = []
    for i, cmd in enumerate(commands):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config)}
        procs.append(
            subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    try:
        return [(p.wait(timeout=timeout), *p.communicate()) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()


@pytest.mark.slow
def test_two_workers_complete_a_search(tiny_folder, tmp_path, one_device):
    """Two workers on loopback; the chief's epoch losses match the one-device run's.

    Only loosely: binary activations turn float differences of the all-reduce into different
    signs after a step or two (the one-step test above checks the arithmetic exactly), while a
    batch split or loss scaling gone wrong would be off by far more.
    """
    out = tmp_path / "cluster"
    script = os.path.join(ROOT, "scripts", "search.py")
    args = as_flags({**TINY, "data_dir": tiny_folder, "strategy": "multi_worker"})
    results = _workers([[sys.executable, script, *args, f"--output_dir={out}"]] * 2)
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    assert f"genotype: {out}" in results[0][1] and f"genotype: {out}" not in results[1][1]
    assert os.path.exists(out / "genotype.json") and os.path.exists(out / "normal.png")
    # The other worker checkpoints into a folder of its own and writes nothing else.
    assert os.listdir(out / "workers") == ["worker_1"]
    assert os.listdir(out / "workers" / "worker_1") == ["checkpoints"]
    with open(out / "history.json") as f:
        losses = [[h["w_loss"], h["a_loss"]] for h in json.load(f)]
    np.testing.assert_allclose(losses, one_device["losses"], rtol=0.05)


@pytest.mark.slow
def test_two_workers_complete_a_training(tiny_folder, tmp_path):
    """model.fit under MultiWorkerMirroredStrategy, each worker with its own output folder."""
    script = os.path.join(ROOT, "scripts", "train.py")
    args = as_flags(
        dict(
            dataset="folder",
            data_dir=tiny_folder,
            init_channels=8,
            layers=1,
            groups=1,
            epochs=1,
            batch_size=12,
            stages=1,
            strategy="multi_worker",
        )
    )
    outs = [tmp_path / f"worker{i}" for i in range(2)]
    results = _workers([[sys.executable, script, *args, f"--output_dir={o}"] for o in outs])
    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    metrics = []
    for out in outs:
        with open(out / "metrics.json") as f:
            metrics.append(json.load(f))
    assert metrics[0]["epochs"] == 1
    for key in ("top1", "loss"):  # mirrored weights: both workers hold the same model
        assert metrics[0][key] == metrics[1][key]


if __name__ == "__main__":
    if sys.argv[1] == "one_step":
        _one_step(*sys.argv[2:])
