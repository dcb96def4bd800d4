"""The whole pipeline on the embedded CIFAR-10 subset, in minutes on a CPU, offline.

search -> genotype -> train (two stages) -> evaluate -> export. Each step is the project's own
command with a preset flagfile (``bats_tf/configs/``); the commands are printed so they can be
rerun alone.

    bats-demo --output_dir=runs/demo
"""

import json
import os
import shlex
import subprocess
import sys
import time

from absl import flags

from bats_tf.commands import common

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", "runs/demo", "Folder for every artefact of the demo.")


def step(title: str, command: str, *args: str) -> None:
    """Runs one command of the pipeline; stops the demo if it fails."""
    cmd = [sys.executable, "-m", f"bats_tf.commands.{command}", *args]
    print(f"\n== {title}\n$ python {shlex.join(cmd[1:])}", flush=True)
    start = time.time()
    result = subprocess.run(cmd)
    if result.returncode:
        sys.exit(f"demo: {title} failed (exit {result.returncode})")
    print(f"== {title}: done in {time.time() - start:.0f} s", flush=True)


def main(argv):
    common.check_no_arguments(argv)
    out = os.path.abspath(FLAGS.output_dir)
    paths = {
        "search": os.path.join(out, "search"),
        "train": os.path.join(out, "train"),
        "eval": os.path.join(out, "evaluation.json"),
        "export": os.path.join(out, "export"),
    }
    genotype = os.path.join(paths["search"], "genotype.json")
    model = os.path.join(paths["train"], "model.keras")
    step(
        "search",
        "search",
        "--flagfile=demo_search",
        f"--output_dir={paths['search']}",
    )
    step(
        "train",
        "train",
        "--flagfile=demo_train",
        f"--genotype={genotype}",
        f"--output_dir={paths['train']}",
    )
    step(
        "evaluate",
        "evaluate",
        f"--model={model}",
        "--dataset=cifar10_mini",
        "--split=test",
        f"--output={paths['eval']}",
    )
    step(
        "export",
        "export",
        f"--model={model}",
        "--dataset=cifar10_mini",
        "--split=test",
        f"--output_dir={paths['export']}",
        "--runs=20",
    )

    with open(paths["eval"], encoding="utf-8") as f:
        ev = json.load(f)
    with open(os.path.join(paths["export"], "export.json"), encoding="utf-8") as f:
        ex = json.load(f)
    print("\n== artefacts")
    for name, path in (
        ("genotype", genotype),
        ("cell diagrams", os.path.join(paths["search"], "normal.png") + ", reduce.png"),
        ("search logs", os.path.join(paths["search"], "tb")),
        ("trained model", model),
        ("training metrics", os.path.join(paths["train"], "metrics.json")),
        ("evaluation", paths["eval"]),
        ("TFLite / LCE", paths["export"]),
    ):
        print(f"  {name:17s} {path}")
    lat, size = ex["latency_ms"], ex["size_bytes"]
    print(f"\n== figures ({ev['dataset']} {ev['split']} split, {ev['examples']} images)")
    print(f"  top-1 {ev['top1']:.1%}, top-5 {ev['top5']:.1%}, loss {ev['loss']:.3f}")
    print(
        f"  params {ev['params']:,} ({ev['binary_params']:,} binary), BOPs {ev['bops']:,}, "
        f"FLOPs {ev['flops']:,}, OPs {ev['ops']:,.0f}"
    )
    print(
        f"  LCE {size['lce'] / 1024:.1f} KiB vs float TFLite {size['float'] / 1024:.1f} KiB "
        f"({size['float'] / size['lce']:.1f}x smaller); {ex['lce_bconv2d']}/{ex['binary_convs']} "
        "binary convs are LceBconv2d"
    )
    for n in lat["lce"]:
        print(f"  batch-1 latency, {n} thread(s): LCE {lat['lce'][n]:.2f} ms, "
              f"float {lat['float'][n]:.2f} ms")  # fmt: skip
    agree = ex["lce_vs_keras"]
    print(
        f"  LCE vs Keras on {ex['images']} images: top-1 agreement {agree['top1_agreement']:.1%}, "
        f"max |logit diff| {agree['max_abs_diff']:.2g}"
    )


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
