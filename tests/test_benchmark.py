"""The benchmark runs end to end in quick mode, and its arithmetic count is consistent."""

import bats_tf  # noqa: F401

# isort: split
import json
import os
import re
import subprocess
import sys

import pytest
import tensorflow as tf
from conftest import RUN_TIMEOUT

from bats_tf import cpu, ops, supernet
from benchmarks import arithmetic, evalnet, grouped, inference, machine
from benchmarks.inputs import IMAGE_SIZE, NUM_CLASSES
from benchmarks.supernet import QUICK_FORMULATIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quick_benchmark_writes_positive_rates(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.run",
        "--quick",
        "--parts=peak,supernet,evalnet,precision,grouped",
        f"--output={out}",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["peak"]["gflops"] > 0 and results["threads"] >= 1
    assert results["machine"]["cpu"] == cpu.model()
    assert proc.stdout.startswith(f"cpu {cpu.model()} (") or f"\ncpu {cpu.model()} (" in proc.stdout
    runs = results["supernet"]["results"]
    assert {r["formulation"] for r in runs.values()} == set(QUICK_FORMULATIONS)
    for name, r in runs.items():
        assert r["status"] == "ok", (name, r)
        assert r["precision"] in ("float32", "bfloat16"), name
        assert r["images_per_s"] > 0 and r["gflops"] > 0 and r["peak_rss_mib"] > 0, name
        assert 0 < r["trace_s"] < r["to_first_step_s"], name
    assert results["supernet"]["ratios"]["quick/fused_vs_grouped"] > 0
    assert "[supernet]" in proc.stdout and "summary:" in proc.stdout
    assert results["peak_bfloat16"]["gflops"] > 0 and "[precision]" in proc.stdout
    precision = results["precision"]
    for conv in precision["convs"].values():
        for key in ("float32_forward", "bfloat16_forward", "float32_train", "bfloat16_train"):
            assert conv[key]["images_per_s"] > 0 and 0 < conv[key]["fraction_of_peak"], key
        assert conv["speedup_forward"] > 0 and conv["speedup_train"] > 0
    (net,) = precision["networks"].values()
    assert net["float32"]["images_per_s"] > 0 and net["bfloat16"]["images_per_s"] > 0
    (shape,) = results["grouped"]["shapes"].values()
    for fmt in ("float32", "bfloat16"):
        assert shape[f"{fmt}/grouped"]["fraction_of_peak"] > 0
        assert shape[f"{fmt}/block_diagonal_vs_grouped"] > 0
    assert "[grouped]" in proc.stdout
    (net,) = results["evalnet"]["results"].values()
    for key in evalnet.RUNNERS:  # the network trains with its binary convs in either format
        assert net[key]["images_per_s"] > 0 and net[f"{key}_first_step_s"] > 0, key


def test_block_diagonal_kernel_convolves_as_the_grouped_one():
    """The dense formulation the grouped part times computes the same convolution."""
    import numpy as np

    rng = np.random.RandomState(1)
    x = rng.randn(2, 6, 6, 12).astype("float32")
    kernel = rng.randn(3, 3, 4, 9).astype("float32")  # 3 groups of 4 in, 3 out
    dense = grouped.block_diagonal(kernel, 3)
    assert dense.shape == (3, 3, 12, 9) and np.count_nonzero(dense) == kernel.size
    want = tf.nn.conv2d(x, kernel, 1, "SAME").numpy()
    got = tf.nn.conv2d(x, dense, 1, "SAME").numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_help_lists_the_flags_and_bad_parts_are_refused():
    run = [sys.executable, "-m", "benchmarks.run"]
    result = subprocess.run([*run, "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 1, result.stderr[-2000:]  # absl's exit code after --help
    shown = re.sub(r"--\[no\]", "--", result.stdout)
    assert "python -m benchmarks.run" in shown.split("flags:")[0]  # the module's docstring
    assert all(f"{flag}:" in shown for flag in ("--parts", "--quick", "--verbose")), shown
    result = subprocess.run([*run, "--parts=peak,nope"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert "error: --parts: unknown nope" in result.stderr, result.stderr[-2000:]


def test_the_parts_define_no_flag():
    """Only the command line (benchmarks/run.py) defines flags."""
    code = (
        "import bats_tf, absl.flags, tensorflow, larq\n"
        "before = set(absl.flags.FLAGS)\n"
        "import benchmarks.arithmetic, benchmarks.evalnet, benchmarks.inference\n"
        "import benchmarks.grouped, benchmarks.machine, benchmarks.precision, benchmarks.report\n"
        "import benchmarks.supernet\n"
        "assert set(absl.flags.FLAGS) == before, set(absl.flags.FLAGS) - before\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_fused_and_reference_supernets_count_the_same_arithmetic():
    """The same ops at the same resolutions: both run a strided dilated conv subsampled."""
    size = dict(init_channels=8, layers=3, nodes=2)
    cfg = ops.OpConfig.for_space("bats", groups=2, pool_bn=True)
    counts = []
    for fused in (True, False):
        tf.keras.backend.clear_session()
        model = supernet.build_supernet(
            "bats", 10, 16, size["init_channels"], size["layers"], size["nodes"], op_config=cfg,
            fused=fused,
        )  # fmt: skip
        counts.append(arithmetic.forward_flops(model))
    assert counts[0] > 0
    assert counts[0] == pytest.approx(counts[1], rel=1e-9)


def test_peak_reports_a_positive_rate():
    result = machine.peak(size=128, repeats=2)
    assert result["gflops"] >= result["median_gflops"] > 0


@pytest.mark.slow
def test_quick_inference_converts_every_binary_conv():
    res = inference.inference_part(inference.QUICK_DEPLOY, runs=2, threads=(1,), log=lambda m: None)
    assert res["deploy_error"] is None
    assert res["lce_bconv2d"] == res["binary_convs"] > 0
    assert "SPACE_TO_BATCH_ND" not in res["lce_ops"]  # dilated convs fused into LceBconv2d
    assert res["size_ratio"] > 10
    assert min(res["latency_ms"]["lce"].values()) > 0 and res["lce_speedup"]


def test_evalnet_step_runs_fits_train_function():
    """The evalnet step trains the network as ``fit`` does: the loss on its batch falls."""
    from bats_tf import network

    size = evalnet.QUICK_EVALNETS["C8_L3_G2"]
    model = network.build_network(
        network.resolve_genotype("bats_paper"),
        NUM_CLASSES,
        IMAGE_SIZE,
        init_channels=size["init_channels"],
        layers=size["layers"],
        groups=size["groups"],
    )
    before = [w.numpy().copy() for w in model.trainable_weights]
    step = evalnet.keras_train_step(model, size["batch"])
    losses = [step() for _ in range(8)]
    assert all(isinstance(v, float) for v in losses)
    assert min(losses[-3:]) < losses[0]
    assert model.optimizer.iterations.numpy() == 8
    assert any((w.numpy() != b).any() for w, b in zip(model.trainable_weights, before))


def test_conv_format_names_what_the_convolutions_run_in():
    """A search with real weights runs every convolution in float32 whatever its precision;
    with binary weights, bfloat16 (where the probe agrees)."""
    from benchmarks.supernet import conv_format

    formats = []
    for binary_weights in (False, True):
        config = ops.OpConfig(groups=2, binary_weights=binary_weights, precision="bfloat16")
        net = supernet.build_supernet("bats", 10, 16, 8, 3, 2, op_config=config, fused=True)
        arch = supernet.Architecture("bats", 2, 0)
        net([tf.ones((2, 16, 16, 3)), *arch.mixing_weights()])
        formats.append(conv_format(net))
    assert formats == ["float32", "bfloat16"]


def test_steal_is_the_hosts_share_of_cpu_time(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    monkeypatch.setattr(machine, "PROC_STAT", str(stat))
    stat.write_text("cpu  100 0 50 800 10 0 5 35 0 0\ncpu0 50 0 25 400 5 0 2 17 0 0\n")
    before = machine.cpu_ticks()
    assert before == dict(user=100, nice=0, system=50, idle=800, iowait=10, irq=0, softirq=5,
                          steal=35)  # fmt: skip
    stat.write_text("cpu  160 0 70 900 10 0 5 55 0 0\n")  # 200 ticks, 20 of them stolen
    assert machine.stolen_share(before, machine.cpu_ticks()) == pytest.approx(0.1)
    assert machine.stolen_share(before, before) is None  # no time passed
    stat.write_text("cpu  160 0 70 700 5 0 5 55 0 0\n")  # idle and iowait stepped back
    assert machine.stolen_share(before, machine.cpu_ticks()) == pytest.approx(20 / 100)
    stat.write_text("intr 1 2 3\n")
    assert machine.cpu_ticks() is None and machine.stolen_share(before, None) is None


@pytest.fixture(scope="module")
def peak_run():
    """One quick run of the peak part, after TensorFlow has started."""
    from benchmarks.run import run

    tf.constant(1.0) + 1.0  # TF has started: run() reports its threads, cannot change them
    return run(parts=["peak"], threads=1, quick=True, log=lambda *_: None)


def test_each_part_records_steal_and_a_large_share_is_flagged(peak_run):
    from benchmarks.report import format_results

    results = dict(peak_run)
    assert results["threads"] == machine.set_threads(0) >= 1
    assert set(results["steal"]) == {"peak", "run"}
    for share in results["steal"].values():
        assert share is None or 0.0 <= share <= 1.0
    results["steal"] = {"peak": 0.01, "run": 0.01}
    text = format_results(results)
    assert "CPU time stolen by the host: peak 1%, run 1%" in text
    assert "WARNING: the host ran other machines" not in text  # the loop may warn on its own
    results["steal"]["peak"] = 0.3
    assert "WARNING: the host ran other machines" in format_results(results)


def test_a_fixed_loop_times_each_part_and_a_slowdown_is_flagged(peak_run):
    from benchmarks.report import format_results

    results = dict(peak_run)
    assert set(results["loop_ms"]) == {"start", "peak"}
    assert all(v > 0 for v in results["loop_ms"].values())
    results["loop_ms"] = {"start": 50.0, "peak": 60.0}
    text = format_results(results)
    assert "a fixed Python loop (ms) at start and after each part: start 50, peak 60" in text
    assert "speed changed" not in text
    results["loop_ms"]["peak"] = 175.0
    assert "the same loop up to 3.5x slower" in format_results(results)


def test_a_failed_worker_names_the_signal_or_its_last_lines():
    from benchmarks.supernet import worker_error

    assert worker_error(-15, "I0000 cuda stub\n") == "killed by SIGTERM"
    assert worker_error(-9, "") == "killed by SIGKILL"
    lines = "\n".join(f"line {i}" for i in range(8))
    assert worker_error(1, lines) == "line 3 | line 4 | line 5 | line 6 | line 7"
    assert worker_error(2, None) == "exit status 2"


def test_the_fixed_loop_takes_longer_for_more_iterations():
    assert machine.loop_ms(400_000, repeats=2) > machine.loop_ms(10_000, repeats=2)
