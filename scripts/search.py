"""Searches a binary cell with BATS and writes its genotype, diagrams and TensorBoard logs.

python scripts/search.py --flagfile=configs/search_tiny.cfg --output_dir=runs/search

Rerunning the same command after an interruption or a crash continues from the last
checkpoint. Flags and the output folder are checked before TensorFlow starts.
"""

import bats_tf  # noqa: F401

# isort: split
import dataclasses
import json
import os

from absl import app, flags

from bats_tf import cli
from bats_tf.search_space import SPACES

CONFIG_FILE = "search_config.json"  # bats_tf.search.CONFIG_FILE, known before TF loads
SCHEDULES = ("constant", "linear", "exponential")  # bats_tf.supernet.SCHEDULES

FLAGS = flags.FLAGS
D = flags
D.DEFINE_string("output_dir", None, "Folder for genotype, diagrams, logs and checkpoints.")
cli.define_data_flags(
    "train",
    "Dataset searched on (the search_weights and search_arch parts of its --split, see "
    "bats_tf/data.py)",
)
D.DEFINE_integer(
    "max_examples", None, "Search on the first N examples of the search parts, half each."
)
D.DEFINE_enum("search_space", "bats", list(SPACES), "Primitive set.")
D.DEFINE_enum("activations", "binary", ["binary", "real"], "Conv inputs binarized or real.")
D.DEFINE_enum(
    "weights", "real", ["binary", "real"], "Conv kernels binarized or real (the paper: real)."
)
D.DEFINE_integer("epochs", 50, "Search epochs.")
D.DEFINE_integer(
    "warmup_epochs", None, "Weight-only epochs before the alphas move (default: 30% of --epochs)."
)
D.DEFINE_integer("batch_size", 64, "Global batch size of each part.")
D.DEFINE_integer("init_channels", 16, "Channels of the first cells.")
D.DEFINE_integer("layers", 8, "Cells in the supernet (at least 3: two are reduction cells).")
D.DEFINE_integer("nodes", 4, "Intermediate nodes per cell.")
D.DEFINE_integer("groups", 4, "Groups of the binary grouped convolutions.")
D.DEFINE_bool("scaling", True, "Learned per-channel scale after binary convs.")
D.DEFINE_bool("shortcut", True, "Identity shortcut around conv ops at stride 1.")
D.DEFINE_bool("fused", True, "Fast fused supernet cells (BATS space); off: reference op layers.")
D.DEFINE_enum(
    "fused_kernels",
    "auto",
    ["auto", "native", "tf"],
    "Fused cells' elementwise chains as compiled C++ kernels (native, built on first use), "
    "as TensorFlow ops (tf), or native when it builds (auto).",
)
D.DEFINE_enum(
    "grouped_conv",
    "direct",
    ["direct", "keras"],
    "Grouped convs on TensorFlow's kernel (direct), or tf-keras's slow XLA path (to compare).",
)
D.DEFINE_float("temperature", 0.2, "Softmax temperature T of the alphas (start value).")
D.DEFINE_float("temperature_final", None, "Final temperature of an annealed schedule.")
D.DEFINE_enum("temperature_schedule", "constant", list(SCHEDULES), "How T moves.")
D.DEFINE_enum("order", "first", ["first", "second"], "DARTS first or second order.")
D.DEFINE_float("w_lr", 0.025, "Weight SGD learning rate (cosine to --w_lr_min).")
D.DEFINE_float("w_lr_min", 0.001, "Final weight learning rate.")
D.DEFINE_float("w_momentum", 0.9, "Weight SGD momentum.")
D.DEFINE_float("w_weight_decay", 3e-4, "Weight decay of real weights.")
D.DEFINE_float("grad_clip", 5.0, "Global-norm clip of weight gradients.")
D.DEFINE_float("a_lr", 3e-4, "Architecture Adam learning rate.")
D.DEFINE_float("a_beta1", 0.5, "Architecture Adam beta1.")
D.DEFINE_float("a_beta2", 0.999, "Architecture Adam beta2.")
D.DEFINE_float("a_weight_decay", 1e-3, "Architecture weight decay.")
D.DEFINE_string("teacher", None, "Saved real-valued Keras model to distil from.")
D.DEFINE_float("kd_weight", 0.5, "Weight of the distillation term (0..1).")
D.DEFINE_float("kd_temperature", 4.0, "Distillation temperature.")
D.DEFINE_integer("seed", 0, "Seed of data order, augmentation and initialisation.")
D.DEFINE_integer("checkpoint_every", 200, "Also checkpoint every this many steps.")
D.DEFINE_bool("deterministic", False, "Enable TensorFlow's deterministic ops.")
D.DEFINE_enum("strategy", "default", list(cli.STRATEGIES), "tf.distribute strategy.")


def config_from_flags() -> dict:
    """The SearchConfig fields, validated (raises UsageError naming the flag); no TensorFlow."""
    f, check = FLAGS, cli.check
    check(f.output_dir, "--output_dir is required")
    cli.check_at_least(1, "epochs", "batch_size", "init_channels", "nodes", "groups")
    cli.check_at_least(1, "checkpoint_every")
    check(f.layers >= 3, f"--layers={f.layers}: must be at least 3 (two are reduction cells)")
    check(
        f.warmup_epochs is None or 0 <= f.warmup_epochs < f.epochs or f.warmup_epochs == 0,
        f"--warmup_epochs={f.warmup_epochs}: must be in [0, --epochs={f.epochs})",
    )
    check(
        f.max_examples is None or f.max_examples >= 2,
        f"--max_examples={f.max_examples}: must be at least 2",
    )
    check(
        f.search_space != "bats" or f.init_channels % f.groups == 0,
        f"--groups={f.groups}: does not divide --init_channels={f.init_channels}",
    )
    final = f.temperature if f.temperature_final is None else f.temperature_final
    for flag, t in (("temperature", f.temperature), ("temperature_final", final)):
        check(0 < t < 100, f"--{flag}={t}: must be in (0, 100)")
    check(
        f.temperature_schedule != "constant" or final == f.temperature,
        "--temperature_final needs --temperature_schedule=linear or exponential",
    )
    check(
        f.temperature_schedule == "constant" or final != f.temperature,
        f"--temperature_schedule={f.temperature_schedule}: set --temperature_final",
    )
    for name in ("w_lr", "a_lr", "kd_temperature", "grad_clip"):
        check(getattr(f, name) > 0, f"--{name}={getattr(f, name)}: must be positive")
    cli.check_at_least(0, "w_weight_decay", "a_weight_decay", "seed")
    for name in ("w_momentum", "a_beta1", "a_beta2"):
        check(0 <= getattr(f, name) < 1, f"--{name}={getattr(f, name)}: must be in [0, 1)")
    check(0 < f.w_lr_min <= f.w_lr, f"--w_lr_min={f.w_lr_min}: must be in (0, --w_lr]")
    check(0 <= f.kd_weight <= 1, f"--kd_weight={f.kd_weight}: must be in [0, 1]")
    check(
        f.teacher is None or os.path.exists(f.teacher),
        f"--teacher={f.teacher}: no such file or folder",
    )
    check(
        not (f.search_space == "darts" and (f.activations, f.weights) != ("binary", "binary")),
        "--activations/--weights: the darts space is real-valued; use darts_binary",
    )
    check(
        f.order == "first" or f.strategy == "default",
        "--order=second runs on one device only (use --strategy=default)",
    )
    cli.check_data_flags()
    cli.check_strategy(f.strategy)
    cli.check_writable_dir(f.output_dir)
    return dict(
        dataset=f.dataset,
        data_dir=os.path.abspath(f.data_dir) if f.dataset == "folder" else f.data_dir,
        split=f.split,
        max_examples=f.max_examples,
        search_space=f.search_space,
        activations=f.activations,
        weights=f.weights,
        epochs=f.epochs,
        warmup_epochs=f.warmup_epochs,
        batch_size=f.batch_size,
        init_channels=f.init_channels,
        layers=f.layers,
        nodes=f.nodes,
        groups=f.groups,
        scaling=f.scaling,
        shortcut=f.shortcut,
        fused=f.fused,
        fused_kernels=f.fused_kernels,
        grouped_conv=f.grouped_conv,
        temperature=f.temperature,
        temperature_final=final,
        temperature_schedule=f.temperature_schedule,
        order=f.order,
        w_lr=f.w_lr,
        w_lr_min=f.w_lr_min,
        w_momentum=f.w_momentum,
        w_weight_decay=f.w_weight_decay,
        grad_clip=f.grad_clip,
        a_lr=f.a_lr,
        a_beta1=f.a_beta1,
        a_beta2=f.a_beta2,
        a_weight_decay=f.a_weight_decay,
        teacher=os.path.abspath(f.teacher) if f.teacher else None,
        kd_weight=f.kd_weight,
        kd_temperature=f.kd_temperature,
        seed=f.seed,
        deterministic=f.deterministic,
        strategy=f.strategy,
        checkpoint_every=f.checkpoint_every,
    )


def check_output_dir(config: dict) -> bool:
    """--output_dir is new, empty, or holds this same run (True: resume); writes nothing."""
    out = FLAGS.output_dir
    path = os.path.join(out, CONFIG_FILE)
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as f:
                found = json.load(f)
        except (OSError, ValueError) as e:
            raise cli.UsageError(f"{path}: unreadable run config ({e})") from None
        # A setting added since that run was saved counts as its default.
        found = {**{k: FLAGS[k].default for k in config if k not in found}, **found}
        diff = sorted(k for k in set(config) | set(found) if found.get(k) != config.get(k))
        cli.check(
            not diff,
            f"--output_dir={out}: holds another run (differs in "
            f"{', '.join('--' + k for k in diff)}); use a new --output_dir",
        )
        return True
    if not cli.is_chief(config["strategy"]):
        return False  # the chief checks the folder; the others may find its first files
    cli.check(
        not os.path.exists(out) or (os.path.isdir(out) and not os.listdir(out)),
        f"--output_dir={out}: not empty and not a search run; use a new folder",
    )
    return False


def main(argv):
    cli.check_no_arguments(argv)
    config = config_from_flags()
    resume = check_output_dir(config)
    from bats_tf.io_utils import atomic_write_json
    from bats_tf.search import SearchConfig, Searcher, use_lean_grappler

    cfg = SearchConfig(**config)
    use_lean_grappler()
    searcher = Searcher(cfg, FLAGS.output_dir)  # checks data and teacher before any write
    if searcher.chief and not resume:
        atomic_write_json(os.path.join(FLAGS.output_dir, CONFIG_FILE), dataclasses.asdict(cfg))
    genotype = searcher.run()
    if searcher.chief:
        print(f"genotype: {os.path.join(FLAGS.output_dir, 'genotype.json')}\n{genotype}")


if __name__ == "__main__":
    app.run(cli.run(main), flags_parser=cli.parse_flags)
