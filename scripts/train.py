"""Trains a genotype as a binary network (two stages, optional distillation); resumable.

python scripts/train.py --flagfile=configs/train_tiny.cfg --genotype=bats_paper \
    --output_dir=runs/train_tiny

Rerunning the same command after an interruption continues where it stopped. Writes
``model.keras`` (load with ``bats_tf.training.load_model``) and ``metrics.json``.
"""

import bats_tf  # noqa: F401

# isort: split
import json
import os

from absl import app, flags

from bats_tf import cli

TRAIN_PARTS = ("train", "final_train")  # bats_tf.training.TRAIN_PARTS, known before TF loads

FLAGS = flags.FLAGS
D = flags
D.DEFINE_string(
    "genotype", "bats_paper", "Genotype JSON, bats_paper, darts_v2 or random:SEED[:SPACE]."
)
D.DEFINE_string("search_space", None, "Build the genotype in this space (e.g. darts_binary).")
D.DEFINE_string("output_dir", None, "Folder for models, checkpoints, logs and metrics.")
cli.define_data_flags("train", "Dataset trained on (--split)")
D.DEFINE_string(
    "val_split", None, "Validation split; unset: the val part of --split (see bats_tf/data.py)."
)
D.DEFINE_enum(
    "train_part",
    "train",
    list(TRAIN_PARTS),
    "Part of --split trained on, without --val_split: train (all but val, the search parts "
    "included) or final_train (what the search never saw).",
)
D.DEFINE_integer("max_examples", None, "Train on the first N examples of the training part.")
D.DEFINE_integer("max_val_examples", None, "Validate on the first N examples of the val part.")
D.DEFINE_enum("structure", "cifar", ["cifar", "imagenet"], "Macro structure (stems, image size).")
D.DEFINE_integer("init_channels", 36, "Channels C of the first cells.")
D.DEFINE_integer("layers", 20, "Cells.")
D.DEFINE_integer("groups", 4, "Groups of the binary grouped convs (LCE: C/groups % 32 == 0).")
D.DEFINE_integer("stem_multiplier", 3, "CIFAR stem width in units of C.")
D.DEFINE_list("stages", ["1", "2"], "Stages: 1 (binary activations, real weights), 2 (binary).")
D.DEFINE_integer("epochs", 250, "Epochs of each stage.")
D.DEFINE_integer("batch_size", 96, "Global batch size.")
D.DEFINE_string("teacher", None, "Saved real-valued model to distil from, or 'self'.")
D.DEFINE_float("kd_weight", 0.5, "Weight of the distillation term (0..1).")
D.DEFINE_float("kd_temperature", 1.0, "Distillation temperature.")
D.DEFINE_enum("optimizer", "adam", ["adam", "sgd"], "Optimizer.")
D.DEFINE_float("lr", 2e-3, "Initial learning rate.")
D.DEFINE_float("momentum", 0.9, "SGD momentum.")
D.DEFINE_enum("schedule", "cosine", ["cosine", "step", "constant"], "Learning-rate schedule.")
D.DEFINE_float("weight_decay", 3e-4, "Decoupled weight decay of real weights (not latent binary).")
D.DEFINE_float("grad_clip", 5.0, "Global-norm gradient clip (0: off).")
D.DEFINE_float("drop_path", 0.0, "Drop-path rate of non-identity ops (ramped up over epochs).")
D.DEFINE_float("auxiliary_weight", 0.0, "Weight of the auxiliary head's loss (0: no head).")
D.DEFINE_integer("seed", 0, "Seed of data order, augmentation and initialisation.")
D.DEFINE_bool("deterministic", False, "Enable TensorFlow's deterministic ops.")
D.DEFINE_bool("strict_lce", False, "Fail if a binary conv would not become an LCE LceBconv2d.")
D.DEFINE_enum("strategy", "default", list(cli.STRATEGIES), "tf.distribute strategy.")


def config_from_flags():
    """A validated TrainConfig from the flags (raises UsageError naming the flag)."""
    from bats_tf.search_space import SPACES

    f, check = FLAGS, cli.check
    check(f.output_dir, "--output_dir is required")
    cli.check_at_least(1, "epochs", "batch_size", "init_channels", "layers", "groups")
    cli.check_at_least(1, "stem_multiplier")
    check(
        f.init_channels % f.groups == 0,
        f"--groups={f.groups}: does not divide --init_channels={f.init_channels}",
    )
    check(f.init_channels % 2 == 0, f"--init_channels={f.init_channels}: must be even")
    check(
        f.search_space is None or f.search_space in SPACES,
        f"--search_space={f.search_space}: expected one of {', '.join(SPACES)}",
    )
    stages = tuple(int(s) if s in ("1", "2") else 0 for s in f.stages)
    check(stages in ((1,), (2,), (1, 2)), f"--stages={','.join(f.stages)}: expected 1,2 or 1 or 2")
    check(
        f.max_examples is None or f.max_examples >= 2,
        f"--max_examples={f.max_examples}: must be at least 2",
    )
    check(
        f.max_val_examples is None or f.max_val_examples >= 1,
        f"--max_val_examples={f.max_val_examples}: must be at least 1",
    )
    check(
        f.val_split is None or f.train_part == "train",
        f"--train_part={f.train_part}: a part of --split's partition; with --val_split, "
        "training uses all of --split",
    )
    for name in ("lr", "kd_temperature"):
        check(getattr(f, name) > 0, f"--{name}={getattr(f, name)}: must be positive")
    cli.check_at_least(0, "weight_decay", "grad_clip", "auxiliary_weight")
    check(0 <= f.drop_path < 1, f"--drop_path={f.drop_path}: must be in [0, 1)")
    check(0 <= f.kd_weight <= 1, f"--kd_weight={f.kd_weight}: must be in [0, 1]")
    check(0 <= f.momentum < 1, f"--momentum={f.momentum}: must be in [0, 1)")
    check(
        f.teacher in (None, "self") or os.path.exists(f.teacher),
        f"--teacher={f.teacher}: no such file (or use --teacher=self)",
    )
    cli.check_data_flags()
    cli.check_writable_dir(f.output_dir)
    cli.check_strategy(f.strategy)
    if f.genotype.endswith(".json") or os.path.isfile(f.genotype):
        from bats_tf.genotype import Genotype

        Genotype.load(f.genotype)  # a bad genotype file fails before TensorFlow loads
    teacher = f.teacher if f.teacher in (None, "self") else os.path.abspath(f.teacher)
    from bats_tf.training import TrainConfig  # TensorFlow loads only once the flags are valid

    return TrainConfig(
        genotype=f.genotype,
        search_space=f.search_space,
        dataset=f.dataset,
        data_dir=f.data_dir,
        split=f.split,
        val_split=f.val_split,
        train_part=f.train_part,
        max_examples=f.max_examples,
        max_val_examples=f.max_val_examples,
        structure=f.structure,
        init_channels=f.init_channels,
        layers=f.layers,
        groups=f.groups,
        stem_multiplier=f.stem_multiplier,
        stages=stages,
        epochs=f.epochs,
        batch_size=f.batch_size,
        optimizer=f.optimizer,
        lr=f.lr,
        momentum=f.momentum,
        schedule=f.schedule,
        weight_decay=f.weight_decay,
        grad_clip=f.grad_clip,
        drop_path=f.drop_path,
        auxiliary_weight=f.auxiliary_weight,
        teacher=teacher,
        kd_weight=f.kd_weight,
        kd_temperature=f.kd_temperature,
        seed=f.seed,
        deterministic=f.deterministic,
        strict_lce=f.strict_lce,
        strategy=f.strategy,
    )


def main(argv):
    cli.check_no_arguments(argv)
    config = config_from_flags()
    cli.make_strategy(config.strategy)  # first: multi_worker needs a fresh runtime
    from bats_tf import network, training

    genotype = network.resolve_genotype(config.genotype)  # a bad genotype fails before data
    if config.search_space:
        from bats_tf.search_space import primitives_of

        genotype.validate(primitives_of(config.search_space))
    if config.teacher not in (None, "self"):
        try:
            training.load_model(config.teacher)
        except ValueError as e:
            raise cli.UsageError(f"--teacher: {e}") from None
    try:
        result = training.train(config, FLAGS.output_dir)
    except network.LceCompatibilityError as e:
        raise cli.UsageError(f"--strict_lce: {e}") from None
    except training.OutputDirError as e:
        raise cli.UsageError(str(e)) from None
    shown = {k: result[k] for k in ("top1", "top5", "loss", "params", "bops", "flops", "ops")}
    shown.update(epochs=result["epochs"], seconds=round(result["seconds"], 1))
    print(json.dumps(shown))
    print(f"model: {os.path.join(FLAGS.output_dir, training.MODEL_FILE)}")


if __name__ == "__main__":
    app.run(cli.run(main), flags_parser=cli.parse_flags)
