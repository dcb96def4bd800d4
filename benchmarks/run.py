"""Measures search, training and deployment speed on this machine, beside the alternatives.

python -m benchmarks.run --parts=peak,supernet,evalnet,inference --output=bench.json
python -m benchmarks.run --quick --parts=peak,supernet   # tiny sizes: checks it runs

Run from the repository root (``benchmarks`` is not installed with ``bats_tf``). Prints one
table per part with a summary line of ratios, and writes every figure as JSON. The evalnet
part needs the optional PyTorch peer: pip install '.[bench]'.
"""

from __future__ import annotations

import json
import os
import time

from absl import flags

from bats_tf import cpu
from bats_tf.commands import common
from benchmarks.evalnet import EVALNETS, QUICK_EVALNETS, evalnet_part
from benchmarks.grouped import QUICK_SHAPES, SHAPES, grouped_part
from benchmarks.inference import DEPLOY, QUICK_DEPLOY, inference_part
from benchmarks.machine import (
    cpu_ticks,
    load_average,
    loop_ms,
    peak,
    set_threads,
    stolen_share,
)
from benchmarks.precision import CONVS, NETWORKS, QUICK_CONVS, QUICK_NETWORKS, precision_part
from benchmarks.report import format_results
from benchmarks.supernet import (
    FORMULATIONS,
    QUICK_FORMULATIONS,
    QUICK_SUPERNETS,
    SUPERNETS,
    supernet_part,
)

PARTS = ("peak", "supernet", "evalnet", "precision", "grouped", "inference")


def run(
    parts=PARTS,
    quick: bool = False,
    threads: int = 0,
    steps: int = 3,
    repeats: int = 3,
    evalnet_steps: int = 3,
    keras_batch: int = 8,
    keras_timeout: float | None = 1800,
    supernets=None,
    formulations=None,
    profile_dir: str | None = None,
    log=print,
    save=None,
) -> dict:
    """Runs the chosen parts; returns every figure (the JSON that ``--output`` holds).

    ``save(results)``, if given, is called after each part with the figures so far.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)} (expected {', '.join(PARTS)})")
    threads = set_threads(threads)
    results = dict(threads=threads, quick=quick, load_start=load_average(), started=time.time())
    results["machine"] = {"cpu": cpu.model(), "flags": cpu.notable_flags()}
    results["errors"] = {}
    results["steal"] = {}  # per part: the share of CPU time the host gave to other machines
    results["loop_ms"] = {"start": loop_ms()}  # after each part: did the machine slow down?
    ticks = {"run": cpu_ticks()}
    ticks["part"] = ticks["run"]

    def finished(part):
        now = cpu_ticks()
        results["steal"][part] = stolen_share(ticks["part"], now)
        ticks["part"] = now
        results["loop_ms"][part] = loop_ms()
        _save(save, results)

    if quick:
        steps, repeats, evalnet_steps = 1, 1, 1
    if "peak" in parts:
        size, repeats_ = (512, 2) if quick else (2048, 10)
        results["peak"] = peak(size, repeats_)
        results["peak_bfloat16"] = peak(size, repeats_, "bfloat16")
        log(
            f"peak {results['peak']['gflops']:.1f} GFLOP/s float32, "
            f"{results['peak_bfloat16']['gflops']:.1f} bfloat16"
        )
        finished("peak")
    if "supernet" in parts:
        configs = QUICK_SUPERNETS if quick else SUPERNETS
        if supernets:
            configs = {k: configs[k] for k in supernets}
        results["supernet"] = supernet_part(
            configs,
            formulations or (QUICK_FORMULATIONS if quick else tuple(FORMULATIONS)),
            steps=steps,
            threads=threads,
            keras_batch=2 if quick else keras_batch,
            keras_timeout=keras_timeout,
            peak_gflops=results.get("peak", {}).get("gflops"),
            profile_dir=profile_dir,
            log=log,
        )
        finished("supernet")
    if "evalnet" in parts:
        results["evalnet"] = evalnet_part(
            QUICK_EVALNETS if quick else EVALNETS, repeats, evalnet_steps, threads, log=log
        )
        finished("evalnet")
    peaks = {
        "float32": results.get("peak", {}).get("gflops"),
        "bfloat16": results.get("peak_bfloat16", {}).get("gflops"),
    }
    if "precision" in parts:
        results["precision"] = precision_part(
            peaks,
            QUICK_CONVS if quick else CONVS,
            QUICK_NETWORKS if quick else NETWORKS,
            repeats,
            steps,
            log=log,
        )
        finished("precision")
    if "grouped" in parts:
        shapes = QUICK_SHAPES if quick else SHAPES
        results["grouped"] = grouped_part(peaks, shapes, repeats, steps, log=log)
        finished("grouped")
    if "inference" in parts:
        try:
            results["inference"] = inference_part(
                QUICK_DEPLOY if quick else DEPLOY, runs=5 if quick else 30, log=log
            )
        except Exception as e:  # noqa: BLE001  (reported, the other parts stand)
            results["errors"]["inference"] = f"{type(e).__name__}: {e}"
        finished("inference")
    results["steal"]["run"] = stolen_share(ticks["run"], cpu_ticks())
    results["load_end"] = load_average()
    results["elapsed_s"] = time.time() - results["started"]
    return results


def _save(save, results):
    if save is not None:
        save(dict(results, load_end=load_average(), elapsed_s=time.time() - results["started"]))


# ------------------------------------------------------------------------------ command line

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", list(PARTS), "Parts to run.")
flags.DEFINE_bool("quick", False, "Tiny sizes and one repetition: only checks that it runs.")
flags.DEFINE_string("output", None, "JSON file for the results.")
flags.DEFINE_integer("threads", 0, "TensorFlow (and PyTorch) threads; 0: all available cores.")
flags.DEFINE_integer("steps", 3, "Timed search steps per supernet configuration (median).")
flags.DEFINE_integer("repeats", 3, "Alternating runs per framework in the evalnet part (median).")
flags.DEFINE_integer(
    "evalnet_steps", 3, "Training steps per evalnet run (a run's rate is their mean)."
)
flags.DEFINE_list("supernets", None, "Supernet configurations (tiny, paper); default: all.")
flags.DEFINE_list(
    "formulations",
    None,
    "Supernet formulations (fused, grouped, keras_groups); default: all (--quick: fused, grouped).",
)
flags.DEFINE_integer("keras_batch", 8, "Batch of the slow keras_groups formulation.")
flags.DEFINE_float(
    "keras_timeout", 1800, "Seconds before a keras_groups configuration is given up."
)
flags.DEFINE_string("profile_dir", None, "Profile the fused step here (cProfile + TF profiler).")


def main(argv):
    common.check_no_arguments(argv)
    f = FLAGS
    common.start_tensorflow()
    unknown = sorted(set(f.parts) - set(PARTS))
    common.check(not unknown, f"--parts: unknown {','.join(unknown)} (from {PARTS})")
    configs = QUICK_SUPERNETS if f.quick else SUPERNETS
    bad = sorted(set(f.supernets or ()) - set(configs))
    common.check(not bad, f"--supernets: unknown {','.join(bad)} (from {', '.join(configs)})")
    bad = sorted(set(f.formulations or ()) - set(FORMULATIONS))
    common.check(not bad, f"--formulations: unknown {','.join(bad)}")
    common.check_at_least(0, "threads")
    common.check_at_least(1, "keras_batch", "steps", "repeats", "evalnet_steps")
    if f.output:
        common.check_writable_dir(os.path.dirname(os.path.abspath(f.output)), "--output")

    def save(results):
        if f.output:
            from bats_tf.io_utils import atomic_write_json

            atomic_write_json(f.output, json.loads(json.dumps(results, default=float)))

    results = run(
        parts=f.parts,
        quick=f.quick,
        threads=f.threads,
        steps=f.steps,
        repeats=f.repeats,
        evalnet_steps=f.evalnet_steps,
        keras_batch=f.keras_batch,
        keras_timeout=f.keras_timeout,
        supernets=f.supernets,
        formulations=f.formulations,
        profile_dir=f.profile_dir,
        save=save,
    )
    print()
    print(format_results(results))
    if f.output:
        save(results)
        print(f"written: {f.output}")


if __name__ == "__main__":
    common.start(main)
