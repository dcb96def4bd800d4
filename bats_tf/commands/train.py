"""bats-train: trains a genotype as a binary network (two stages, optional distillation).

    bats-train --flagfile=train_tiny --genotype=bats_paper --output_dir=runs/train_tiny

Rerunning the same command after an interruption continues where it stopped. Writes
``model.keras`` (load with ``bats_tf.training.load_model``), ``classes.json`` beside it and
``metrics.json``. Everything is checked before the output folder is created or claimed; then
the run holds the folder's lock (:mod:`bats_tf.run_lock`) to its end. Every setting of
:class:`~bats_tf.train_config.TrainConfig` is a flag.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from bats_tf import io_utils, run_lock
from bats_tf.commands import common
from bats_tf.strategy import check_strategy
from bats_tf.train_config import TrainConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Folder for models, checkpoints, logs and metrics.")
common.define_flags(TrainConfig)
common.define_bad_images_flag()


def config_from_flags() -> TrainConfig:
    """The checked config (raises an error naming the flag); no TensorFlow."""
    f = FLAGS
    common.check(f.output_dir, "--output_dir is required")
    teacher = f.teacher if f.teacher in (None, "self") else io_utils.absolute(f.teacher)
    # A progress bar on a terminal; one line per epoch in a log file.
    verbose = 1 if sys.stdout.isatty() else 2
    config = common.config_from_flags(TrainConfig, teacher=teacher, verbose=verbose)
    paths = (f.output_dir, f.data_dir or "", teacher or "", f.genotype)
    if any(io_utils.is_remote(p) for p in paths):
        common.start_tensorflow(config.strategy)  # TensorFlow reads remote file systems
    common.check(
        f.teacher in (None, "self") or io_utils.exists(f.teacher),
        f"--teacher={f.teacher}: no such file (or use --teacher=self)",
    )
    common.check_data_flags()
    common.check_output_not_in_data(f.output_dir)
    common.check(
        config.val_split is None or config.val_split != config.split,
        f"--val_split={config.val_split}: the split trained on (--split); validate on another "
        "split, or leave --val_split unset to validate on the val part of --split",
    )
    common.check_writable_dir(f.output_dir)
    check_strategy(config.strategy)
    common.check(
        not io_utils.isdir(f.genotype),
        f"--genotype={f.genotype}: a folder; give a genotype file (a search's genotype.json)",
    )
    if f.genotype.endswith(".json") or io_utils.exists(f.genotype):
        from bats_tf.genotype import Genotype

        Genotype.load(f.genotype)  # a bad genotype file fails before TensorFlow loads
    return config


def main(argv):
    common.check_no_arguments(argv)
    config = config_from_flags()
    common.start_tensorflow(config.strategy)
    common.use_bad_images_flag()
    from bats_tf import network, training

    out = FLAGS.output_dir
    network.resolve_genotype(config.genotype)  # a bad genotype fails before the data loads
    try:
        prepared = training.prepare(config, out)  # every check; nothing written
        common.check_classes(prepared.info)
        with run_lock.hold(out, "bats-train"):  # the folder is this run's to its end
            io_utils.remove_temporaries(out)
            result = training.train(config, out, prepared=prepared)
    except network.LceCompatibilityError as e:
        raise common.UsageError(f"--strict_lce: {e}") from None
    shown = {k: result[k] for k in ("top1", "top5", "loss", "params", "bops", "flops", "ops")}
    shown.update(epochs=result["epochs"], seconds=round(result["seconds"], 1))
    print(json.dumps(shown))
    print(f"model: {os.path.join(FLAGS.output_dir, training.MODEL_FILE)}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
