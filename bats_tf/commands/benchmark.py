"""Measures search, training and deployment speed on this machine, beside the alternatives.

bats-benchmark --parts=peak,supernet,evalnet,inference --output=bench.json
bats-benchmark --quick --parts=peak,supernet   # tiny sizes: checks it runs

Prints one table per part with a summary line of ratios, and writes every figure as JSON.
The evalnet part needs the optional PyTorch peer: pip install '.[bench]'.
"""

import json
import os

from absl import flags

from bats_tf.commands import common

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["peak", "supernet", "evalnet", "inference"], "Parts to run.")
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
    from bats_tf import benchmark

    unknown = sorted(set(f.parts) - set(benchmark.PARTS))
    common.check(not unknown, f"--parts: unknown {','.join(unknown)} (from {benchmark.PARTS})")
    configs = benchmark.QUICK_SUPERNETS if f.quick else benchmark.SUPERNETS
    bad = sorted(set(f.supernets or ()) - set(configs))
    common.check(not bad, f"--supernets: unknown {','.join(bad)} (from {', '.join(configs)})")
    bad = sorted(set(f.formulations or ()) - set(benchmark.FORMULATIONS))
    common.check(not bad, f"--formulations: unknown {','.join(bad)}")
    common.check_at_least(0, "threads")
    common.check_at_least(1, "keras_batch", "steps", "repeats", "evalnet_steps")
    if f.output:
        common.check_writable_dir(os.path.dirname(os.path.abspath(f.output)), "--output")

    def save(results):
        if f.output:
            from bats_tf.io_utils import atomic_write_json

            atomic_write_json(f.output, json.loads(json.dumps(results, default=float)))

    results = benchmark.run(
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
    print(benchmark.format_results(results))
    if f.output:
        save(results)
        print(f"written: {f.output}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
