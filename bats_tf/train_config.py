"""Every setting of a training run, declared once (no TensorFlow): :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses

from bats_tf.datasets import DATA_DIR_HELP, SPLIT_HELP, check_data, dataset_setting
from bats_tf.errors import ConfigError
from bats_tf.op_specs import CONV_PRECISIONS
from bats_tf.search_space import SPACES
from bats_tf.settings import setting, validate
from bats_tf.strategy import STRATEGIES
from bats_tf.widths import check_deployable

CONFIG_FILE = "train_config.json"  # the run's settings, in its output folder
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("cosine", "step", "constant")
TRAIN_PARTS = ("train", "final_train")  # parts of bats_tf.data's partition a network trains on
STRUCTURES = ("cifar", "imagenet")
STAGES = ((1, 2), (1,), (2,))  # 1: binary activations, real weights; 2: fully binary


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run. Paper values unknown are documented defaults."""

    genotype: str = setting(
        "bats_paper", "Genotype JSON, bats_paper, darts_v2 or random:SEED[:SPACE]."
    )
    search_space: str | None = setting(
        None,
        "Build the genotype in this space (e.g. darts_binary); unset: its own.",
        choices=SPACES,
    )
    dataset: str = dataset_setting("cifar10", "Dataset trained on (--split)")
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    split: str = setting("train", SPLIT_HELP)
    val_split: str | None = setting(
        None, "Validation split; unset: the val part of --split (see bats_tf/data.py)."
    )
    train_part: str = setting(
        "train",
        "Part of --split trained on, without --val_split: train (all but val, the search parts "
        "included) or final_train (what the search never saw).",
        choices=TRAIN_PARTS,
    )
    max_examples: int | None = setting(
        None, "Train on the first N examples of the training part.", lower=2
    )
    max_val_examples: int | None = setting(
        None, "Validate on the first N examples of the val part.", lower=1
    )
    structure: str = setting("cifar", "Macro structure (stems, image size).", choices=STRUCTURES)
    init_channels: int = setting(36, "Channels C of the first cells (even).", lower=1)
    layers: int = setting(20, "Cells.", lower=1)
    groups: int = setting(
        4, "Groups of the binary grouped convs (LCE: C/groups % 32 == 0).", lower=1
    )
    stem_multiplier: int = setting(3, "CIFAR stem width in units of C.", lower=1)
    scaling: bool = setting(True, "Learned per-channel scale after binary convs.")
    shortcut: bool = setting(True, "Identity shortcut around conv ops at stride 1.")
    stages: tuple[int, ...] = setting(
        (1, 2), "Stages: 1 (binary activations, real weights), 2 (binary).", choices=STAGES
    )
    epochs: int = setting(250, "Epochs of each stage.", lower=1)
    batch_size: int = setting(96, "Global batch size.", lower=1)
    optimizer: str = setting("adam", "Optimizer.", choices=OPTIMIZERS)
    lr: float = setting(2e-3, "Initial learning rate.", above=0)
    momentum: float = setting(0.9, "SGD momentum.", lower=0, below=1)
    schedule: str = setting("cosine", "Learning-rate schedule.", choices=LR_SCHEDULES)
    weight_decay: float = setting(
        3e-4, "Decoupled weight decay of real weights (not latent binary).", lower=0
    )
    grad_clip: float = setting(5.0, "Global-norm gradient clip (0: off).", lower=0)
    drop_path: float = setting(
        0.0, "Drop-path rate of non-identity ops (ramped up over epochs).", lower=0, below=1
    )
    auxiliary_weight: float = setting(
        0.0, "Weight of the auxiliary head's loss (0: no head).", lower=0
    )
    teacher: str | None = setting(None, "Saved real-valued model to distil from, or 'self'.")
    kd_weight: float = setting(0.5, "Weight of the distillation term.", lower=0, upper=1)
    kd_temperature: float = setting(1.0, "Distillation temperature.", above=0)
    seed: int = setting(0, "Seed of data order, augmentation and initialisation.", lower=0)
    deterministic: bool = setting(False, "Enable TensorFlow's deterministic ops.")
    strict_lce: bool = setting(False, "Fail if a binary conv would not become an LCE LceBconv2d.")
    deployable: bool = setting(
        False,
        "Groups per cell from its width, 32 input channels per group (not --groups), so that "
        "LCE runs every binary conv as LceBconv2d; needed by a genotype searched deployable.",
    )
    precision: str = setting(
        "auto",
        "Number format of the binary convolutions while training: float32, bfloat16 (the "
        "same outputs, faster on AMX or a GPU) or auto (bfloat16 there). The final "
        "model.keras, the one to deploy, is float32.",
        choices=CONV_PRECISIONS,
    )
    strategy: str = setting("default", "tf.distribute strategy.", choices=STRATEGIES)
    verbose: int = setting(2, "model.fit verbosity.", flag=False)

    def check(self) -> None:
        """Checks every setting and how they fit together; raises :class:`ConfigError`."""
        validate(self)
        check_data(self.dataset, self.data_dir)
        if self.deployable:
            stem = self.stem_multiplier if self.structure == "cifar" else 1
            check_deployable(self.init_channels, stem, 1)
        elif self.init_channels % self.groups:
            raise ConfigError(
                "groups", f"does not divide init_channels={self.init_channels}", self.groups
            )
        if self.init_channels % 2:
            raise ConfigError("init_channels", "must be even", self.init_channels)
        if self.val_split is not None and self.train_part != "train":
            raise ConfigError(
                "train_part",
                "a part of split's partition; with val_split, training uses all of split",
                self.train_part,
            )

    def network_kwargs(self) -> dict:
        return dict(
            structure=self.structure,
            init_channels=self.init_channels,
            layers=self.layers,
            groups=self.groups,
            search_space=self.search_space,
            stem_multiplier=self.stem_multiplier,
            drop_path=self.drop_path,
            auxiliary=self.auxiliary_weight > 0,
            scaling=self.scaling,
            shortcut=self.shortcut,
            deployable=self.deployable,
            precision=self.precision,
        )
