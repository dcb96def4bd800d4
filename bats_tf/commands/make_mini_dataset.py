r"""Copies a seeded, class-balanced subset of an image folder into a small train/test dataset.

Made ``bats_tf/assets/cifar10_mini`` from the CIFAR-10 training split exported as JPEG:

  python scripts/make_mini_dataset.py --source=../shared/data/cifar10-jpeg/train \
      --output=bats_tf/assets/cifar10_mini

For each class (a folder of ``source``), a permutation of its sorted file names drawn with
``numpy.random.RandomState(seed)`` gives the first ``train_per_class`` files to ``train/`` and
the next ``test_per_class`` to ``test/``. Files are copied byte for byte under their own names.
"""

import os
import shutil

import numpy as np
from absl import flags

from bats_tf.commands import common

FLAGS = flags.FLAGS
IMAGES = (".jpg", ".jpeg", ".png")
flags.DEFINE_string("source", None, "Folder of <label>/<image> files.", required=True)
flags.DEFINE_string("output", None, "New folder to write train/ and test/ into.", required=True)
flags.DEFINE_integer("train_per_class", 300, "Training images per class.", lower_bound=1)
flags.DEFINE_integer("test_per_class", 60, "Test images per class.", lower_bound=1)
flags.DEFINE_integer("seed", 0, "Seed of the per-class permutations.", lower_bound=0)

README = """# cifar10_mini

A small real image dataset for tests, demos and quick runs, in the `folder` layout
(`<split>/<label>/<file>.jpg`): {classes} classes, {train} training images per class
({train_total} in all) and {test} test images per class ({test_total} in all), 32x32 RGB JPEG.

Source: the CIFAR-10 training split (Krizhevsky, "Learning Multiple Layers of Features from
Tiny Images", 2009), as JPEG files from a public export. Both `train/` and `test/` come from
that training split, disjoint; the official CIFAR-10 test split is not used.

How chosen: for each class, a permutation of its sorted file names drawn with
`numpy.random.RandomState({seed})`; its first {train} files went to `train/`, the next {test}
to `test/`. Files are copied unchanged and keep their names. Made by
`scripts/make_mini_dataset.py --seed={seed} --train_per_class={train} --test_per_class={test}`.
"""


def _choose(source: str, train: int, test: int, seed: int) -> dict[str, dict[str, list[str]]]:
    """{split: {label: file names}}, checked before anything is written."""
    labels = sorted(d for d in os.listdir(source) if os.path.isdir(os.path.join(source, d)))
    if not labels:
        raise SystemExit(f"--source={source}: no class folders")
    rng = np.random.RandomState(seed)
    plan = {"train": {}, "test": {}}
    for label in labels:
        folder = os.path.join(source, label)
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGES))
        if len(files) < train + test:
            raise SystemExit(f"{folder}: {len(files)} images, need {train + test}")
        chosen = [files[i] for i in rng.permutation(len(files))[: train + test]]
        plan["train"][label], plan["test"][label] = sorted(chosen[:train]), sorted(chosen[train:])
    return plan


def main(argv):
    del argv
    source, out = FLAGS.source, FLAGS.output
    train, test = FLAGS.train_per_class, FLAGS.test_per_class
    if os.path.isdir(out) and os.listdir(out):
        raise SystemExit(f"--output={out}: exists and is not empty; refusing to overwrite")
    if not os.path.isdir(source):
        raise SystemExit(f"--source={source}: no such directory")
    plan = _choose(source, train, test, FLAGS.seed)
    for split, classes in plan.items():
        for label, names in classes.items():
            os.makedirs(os.path.join(out, split, label))
            for name in names:
                shutil.copyfile(
                    os.path.join(source, label, name), os.path.join(out, split, label, name)
                )
    classes = len(plan["train"])
    readme = README.format(
        classes=classes,
        train=train,
        test=test,
        train_total=classes * train,
        test_total=classes * test,
        seed=FLAGS.seed,
    )
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(readme)
    print(f"wrote {classes} classes x ({train} + {test}) images to {out}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
