"""The ``supernet`` part: one search step of ``Searcher`` per configuration and formulation.

Each configuration runs in a fresh process (``python -m benchmarks.supernet SPEC OUT``, from
the repository root), so its trace time, time to the first step and peak memory are its own.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.arithmetic import SEARCH_PASSES, forward_flops
from benchmarks.machine import load_average, peak_rss_mib, set_threads, timed

FORMULATIONS = {  # name: (fused, grouped_conv, precision of the binary convolutions)
    "fused": (True, "direct", "auto"),  # as scripts/search.py runs by default
    "grouped": (False, "direct", "float32"),  # the reference
    "keras_groups": (False, "keras", "float32"),
}
SUPERNETS = {  # the tiny search config (configs/search_tiny.cfg) and the paper-scale one
    "tiny": dict(init_channels=8, layers=5, nodes=4, groups=2, batch=32),
    "paper": dict(init_channels=16, layers=8, nodes=4, groups=4, batch=64),
}
QUICK_SUPERNETS = {"quick": dict(init_channels=4, layers=3, nodes=1, groups=2, batch=4)}
QUICK_FORMULATIONS = ("fused", "grouped")  # keras_groups takes minutes even there
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # of the repository


def supernet_worker(spec: dict) -> dict:
    """Times the search step of a :class:`~bats_tf.search.Searcher` (run in a fresh process).

    The searcher is the one ``scripts/search.py`` runs, on the embedded ``cifar10_mini`` data
    (two batches per part), so the time to the first step includes reading the data.
    """
    import tensorflow as tf

    from bats_tf.search import SearchConfig, Searcher, use_lean_grappler

    threads = set_threads(spec["threads"])
    use_lean_grappler()  # as scripts/search.py
    imported = time.time() - spec["started_at"]
    b = spec["batch"]
    cfg = SearchConfig(
        dataset="cifar10_mini",
        max_examples=4 * b,
        epochs=1,
        batch_size=b,
        init_channels=spec["init_channels"],
        layers=spec["layers"],
        nodes=spec["nodes"],
        groups=spec["groups"],
        fused=spec["fused"],
        grouped_conv=spec["grouped_conv"],
        precision=spec["precision"],
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        searcher = Searcher(cfg, out, log=lambda *_: None)
    build_s = time.perf_counter() - start
    batch = next(iter(searcher.epoch_data(0)))
    go = tf.constant(0.0)

    def step():
        return searcher.search_step(batch, True, go).numpy()

    profiler = None
    if spec.get("profile_dir"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    trace_s = timed(lambda: searcher.search_step.get_concrete_function(batch, True, go))
    if profiler:
        profiler.disable()
        profiler.dump_stats(os.path.join(spec["profile_dir"], "trace.pstats"))
    first_s = timed(step)
    to_first_step_s = time.time() - spec["started_at"]
    if spec["steps"] > 1:
        step()  # warm-up
    times = [timed(step) for _ in range(spec["steps"])]
    if spec.get("profile_dir"):
        tf.profiler.experimental.start(spec["profile_dir"])
        step()
        tf.profiler.experimental.stop()
    step_s = statistics.median(times)
    forward = forward_flops(searcher.model)
    flops = forward * SEARCH_PASSES * b
    return dict(
        status="ok",
        threads=threads,
        precision=conv_format(searcher.model),
        import_s=imported,
        build_s=build_s,
        trace_s=trace_s,
        first_step_s=first_s,
        to_first_step_s=to_first_step_s,
        step_s=step_s,
        step_times_s=times,
        images_per_s=b / step_s,
        forward_gflop_per_image=forward / 1e9,
        step_gflop=flops / 1e9,
        gflops=flops / step_s / 1e9,
        peak_rss_mib=peak_rss_mib(),
        layers_in_model=len(searcher.model.layers),
        load=load_average(),
    )


def conv_format(model) -> str:
    """``bfloat16`` if any convolution of ``model`` runs in bfloat16, else ``float32`` (a
    search with real weights keeps them all float32, whatever its ``precision``)."""
    flags = [getattr(m, "bfloat16", False) for m in model.submodules]
    return "bfloat16" if any(any(f) if isinstance(f, list) else f for f in flags) else "float32"


def run_worker(spec: dict, timeout: float | None) -> dict:
    """Runs :func:`supernet_worker` in a fresh Python process (from the repository root);
    returns its result."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        spec = dict(spec, started_at=time.time())
        cmd = [sys.executable, "-m", "benchmarks.supernet", json.dumps(spec), out]
        try:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            return dict(status="timeout", timeout_s=timeout, load=load_average())
        if proc.returncode or not os.path.exists(out):
            error = worker_error(proc.returncode, proc.stderr)
            return dict(status="error", returncode=proc.returncode, error=error)
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def worker_error(returncode: int, stderr: str | None) -> str:
    """Why a worker failed: the signal that killed it, or the last lines it wrote."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return " | ".join((stderr or "").strip().splitlines()[-5:]) or f"exit status {returncode}"


def supernet_part(
    configs: dict,
    formulations=tuple(FORMULATIONS),
    steps: int = 3,
    threads: int = 0,
    keras_batch: int = 8,
    keras_timeout: float | None = 1800,
    timeout: float | None = None,
    peak_gflops: float | None = None,
    profile_dir: str | None = None,
    log=print,
) -> dict:
    """Each configuration in each formulation, one after the other, each in its own process.

    ``keras_groups`` runs at ``min(batch, keras_batch)`` for one timed step (after the first).
    """
    results = {}
    for name, size in configs.items():
        for form in formulations:
            fused, grouped_conv, precision = FORMULATIONS[form]
            keras = grouped_conv == "keras"
            spec = dict(
                size,
                fused=fused,
                grouped_conv=grouped_conv,
                precision=precision,
                threads=threads,
                steps=1 if keras else steps,
                batch=min(size["batch"], keras_batch) if keras else size["batch"],
                profile_dir=None,
            )
            if profile_dir and form == "fused":
                spec["profile_dir"] = os.path.join(os.path.abspath(profile_dir), name)
                os.makedirs(spec["profile_dir"], exist_ok=True)
            log(f"supernet {name} {form} (batch {spec['batch']}, load {load_average()[0]}) ...")
            res = run_worker(spec, keras_timeout if keras else timeout)
            res.update(config=name, formulation=form, batch=spec["batch"])
            res["reduced_batch"] = spec["batch"] != size["batch"]
            if peak_gflops and res["status"] == "ok":
                res["fraction_of_peak"] = res["gflops"] / peak_gflops
            log("  " + _one_line(res))
            results[f"{name}/{form}"] = res
    return dict(configs=configs, results=results, ratios=_supernet_ratios(results, configs))


def _one_line(res: dict) -> str:
    if res["status"] != "ok":
        return f"{res['status']}: {res.get('error') or res.get('timeout_s')}"
    return (
        f"{res['images_per_s']:.2f} images/s, step {res['step_s']:.2f} s, "
        f"trace {res['trace_s']:.1f} s, first step {res['first_step_s']:.1f} s, "
        f"{res['peak_rss_mib']:.0f} MiB"
    )


def _supernet_ratios(results: dict, configs: dict) -> dict:
    ratios = {}
    for name in configs:
        fused = results.get(f"{name}/fused", {})
        for other in ("grouped", "keras_groups"):
            res = results.get(f"{name}/{other}", {})
            if fused.get("status") == "ok" and res.get("status") == "ok":
                ratios[f"{name}/fused_vs_{other}"] = fused["images_per_s"] / res["images_per_s"]
    return ratios


def _worker_main(argv):
    spec, out = json.loads(argv[1]), argv[2]
    result = supernet_worker(spec)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    _worker_main(sys.argv)
