"""bats-train: trains a genotype as a binary network (two stages, optional distillation).

    bats-train --flagfile=train_tiny --genotype=bats_paper --output_dir=runs/train_tiny

Rerunning the same command after an interruption continues where it stopped. Writes
``model.keras`` (load with ``bats_tf.training.load_model``) and ``metrics.json``. Every
setting of :class:`~bats_tf.train_config.TrainConfig` is a flag.
"""

from __future__ import annotations

import json
import os
import sys

from absl import flags

from bats_tf import io_utils
from bats_tf.commands import common
from bats_tf.strategy import check_strategy
from bats_tf.train_config import TrainConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Folder for models, checkpoints, logs and metrics.")
common.define_flags(TrainConfig)


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
    common.check_writable_dir(f.output_dir)
    check_strategy(config.strategy)
    if f.genotype.endswith(".json") or io_utils.exists(f.genotype):
        from bats_tf.genotype import Genotype

        Genotype.load(f.genotype)  # a bad genotype file fails before TensorFlow loads
    return config


def main(argv):
    common.check_no_arguments(argv)
    config = config_from_flags()
    common.start_tensorflow(config.strategy)
    from bats_tf import network, training

    genotype = network.resolve_genotype(config.genotype)  # a bad genotype fails before data
    if config.search_space:
        from bats_tf.search_space import primitives_of

        genotype.validate(primitives_of(config.search_space))
    if config.teacher not in (None, "self"):
        try:
            training.load_model(config.teacher)
        except ValueError as e:
            raise common.UsageError(f"--teacher: {e}") from None
    try:
        result = training.train(config, FLAGS.output_dir)
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
