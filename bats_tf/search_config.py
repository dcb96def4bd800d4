"""Every setting of a search, declared once (no TensorFlow): :class:`SearchConfig`."""

from __future__ import annotations

import dataclasses

from bats_tf.cost import COSTS
from bats_tf.datasets import DATA_DIR_HELP, SPLIT_HELP, check_data, dataset_setting
from bats_tf.errors import ConfigError
from bats_tf.op_specs import CONV_PRECISIONS
from bats_tf.search_space import SPACES
from bats_tf.settings import setting, validate
from bats_tf.strategy import STRATEGIES
from bats_tf.widths import check_deployable

CONFIG_FILE = "search_config.json"  # the run's settings, in its output folder
TEMPERATURE_SCHEDULES = ("constant", "linear", "exponential")  # of the alphas' softmax temperature
QUANTIZATIONS = ("binary", "real")
FUSED_KERNELS = ("auto", "native", "tf")  # bats_tf.fused_kernels.resolve
GROUPED_CONVS = ("direct", "keras")  # ops.OpConfig.grouped_conv: "keras" only to compare speed
ORDERS = ("first", "second")
STEM_MULTIPLIER = 3  # the supernet's stem has 3 * init_channels channels (DARTS)


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search. Defaults follow DARTS where the BATS paper is silent.

    ``temperature_final`` None is ``temperature`` (a constant temperature).
    """

    dataset: str = dataset_setting(
        "cifar10",
        "Dataset searched on (the search_weights and search_arch parts of its --split, see "
        "bats_tf/data.py)",
    )
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    split: str = setting("train", SPLIT_HELP)
    max_examples: int | None = setting(
        None, "Search on the first N examples of the search parts, half each.", lower=2
    )
    search_space: str = setting("bats", "Primitive set.", choices=SPACES)
    activations: str = setting("binary", "Conv inputs binarized or real.", choices=QUANTIZATIONS)
    weights: str = setting(
        "real", "Conv kernels binarized or real (the paper: real).", choices=QUANTIZATIONS
    )
    epochs: int = setting(50, "Search epochs.", lower=1)
    warmup_epochs: int | None = setting(
        None, "Weight-only epochs before the alphas move (default: 30% of --epochs).", lower=0
    )
    batch_size: int = setting(64, "Global batch size of each part.", lower=1)
    init_channels: int = setting(16, "Channels of the first cells.", lower=1)
    layers: int = setting(8, "Cells in the supernet (two are reduction cells).", lower=3)
    nodes: int = setting(4, "Intermediate nodes per cell.", lower=1)
    groups: int = setting(4, "Groups of the binary grouped convolutions.", lower=1)
    scaling: bool = setting(True, "Learned per-channel scale after binary convs.")
    shortcut: bool = setting(True, "Identity shortcut around conv ops at stride 1.")
    deployable: bool = setting(
        False,
        "Groups per cell from its width, 32 input channels per group, so that LCE runs every "
        "binary conv of the searched network as LceBconv2d (BATS space; init_channels a "
        "multiple of 32).",
    )
    fused: bool = setting(True, "Fast fused supernet cells (BATS space); off: reference ops.")
    precision: str = setting(
        "auto",
        "Number format of the binary convolutions (binary inputs and kernels): float32, "
        "bfloat16 (the same outputs, faster on AMX or a GPU), or auto (bfloat16 there).",
        choices=CONV_PRECISIONS,
    )
    fused_kernels: str = setting(
        "auto",
        "Fused cells' elementwise chains as compiled C++ kernels (native, built on first use), "
        "as TensorFlow ops (tf), or native when it builds (auto).",
        choices=FUSED_KERNELS,
    )
    grouped_conv: str = setting(
        "direct",
        "Grouped convs on TensorFlow's kernel (direct), or tf-keras's slow XLA path (to compare).",
        choices=GROUPED_CONVS,
    )
    temperature: float = setting(
        0.2, "Softmax temperature T of the alphas (start value).", above=0, below=100
    )
    temperature_final: float | None = setting(
        None,
        "Final temperature of an annealed schedule (default: --temperature).",
        above=0,
        below=100,
    )
    temperature_schedule: str = setting("constant", "How T moves.", choices=TEMPERATURE_SCHEDULES)
    order: str = setting("first", "DARTS first or second order.", choices=ORDERS)
    w_lr: float = setting(0.025, "Weight SGD learning rate (cosine to --w_lr_min).", above=0)
    w_lr_min: float = setting(0.001, "Final weight learning rate.", above=0)
    w_momentum: float = setting(0.9, "Weight SGD momentum.", lower=0, below=1)
    w_weight_decay: float = setting(3e-4, "Weight decay of real weights.", lower=0)
    grad_clip: float = setting(5.0, "Global-norm clip of weight gradients.", above=0)
    a_lr: float = setting(3e-4, "Architecture Adam learning rate.", above=0)
    a_beta1: float = setting(0.5, "Architecture Adam beta1.", lower=0, below=1)
    a_beta2: float = setting(0.999, "Architecture Adam beta2.", lower=0, below=1)
    a_weight_decay: float = setting(1e-3, "Architecture weight decay.", lower=0)
    cost: str = setting(
        "ops",
        "Cost of the ops in the architecture loss and the logs: ops (BOPs/64 + FLOPs), bops, or "
        "latency (LCE, from --latency_table).",
        choices=COSTS,
    )
    cost_weight: float = setting(
        0.0,
        "Weight of the expected cost in the architecture loss, relative to the cost at uniform "
        "alphas (0: the cost is logged only).",
        lower=0,
    )
    latency_table: str | None = setting(
        None, "JSON of per-op LCE latencies for cost=latency (bats-latency-table builds it)."
    )
    max_parameter_free: int | None = setting(
        None,
        "Cap on the parameter-free ops (pools, skips) of each derived cell: the weakest edges "
        "over it take their best conv instead (P-DARTS). Unset: no cap.",
        lower=0,
    )
    teacher: str | None = setting(None, "Saved real-valued Keras model to distil from.")
    kd_weight: float = setting(0.5, "Weight of the distillation term.", lower=0, upper=1)
    kd_temperature: float = setting(4.0, "Distillation temperature.", above=0)
    seed: int = setting(0, "Seed of data order, augmentation and initialisation.", lower=0)
    deterministic: bool = setting(False, "Enable TensorFlow's deterministic ops.")
    strategy: str = setting("default", "tf.distribute strategy.", choices=STRATEGIES)
    checkpoint_every: int = setting(200, "Also checkpoint every this many steps.", lower=1)

    def __post_init__(self):
        if self.temperature_final is None:
            object.__setattr__(self, "temperature_final", self.temperature)

    def check(self) -> None:
        """Checks every setting and how they fit together; raises :class:`ConfigError`."""
        validate(self)
        check_data(self.dataset, self.data_dir)
        if self.warmup_epochs is not None and self.warmup_epochs >= self.epochs:
            raise ConfigError(
                "warmup_epochs", f"must be in [0, epochs={self.epochs})", self.warmup_epochs
            )
        if self.deployable:
            check_deployable(self.init_channels, STEM_MULTIPLIER, self.nodes, self.search_space)
        elif self.search_space == "bats" and self.init_channels % self.groups:
            raise ConfigError(
                "groups", f"does not divide init_channels={self.init_channels}", self.groups
            )
        constant = self.temperature_final == self.temperature
        if self.temperature_schedule == "constant" and not constant:
            raise ConfigError(
                "temperature_final",
                "needs temperature_schedule=linear or exponential",
                self.temperature_final,
            )
        if self.temperature_schedule != "constant" and constant:
            raise ConfigError(
                "temperature_schedule", "set temperature_final", self.temperature_schedule
            )
        if self.w_lr_min > self.w_lr:
            raise ConfigError("w_lr_min", f"must be in (0, w_lr={self.w_lr}]", self.w_lr_min)
        if self.search_space == "darts" and (self.activations, self.weights) != ("binary",) * 2:
            raise ConfigError(
                "search_space", "real-valued; use darts_binary for binary activations", "darts"
            )
        if self.cost == "latency" and not self.latency_table:
            raise ConfigError("latency_table", "required by cost=latency")
        if self.max_parameter_free is not None and self.max_parameter_free > 2 * self.nodes:
            raise ConfigError(
                "max_parameter_free",
                f"at most 2 * nodes = {2 * self.nodes}",
                self.max_parameter_free,
            )
        if self.order == "second" and self.strategy != "default":
            raise ConfigError("order", "runs on one device only (use strategy=default)", self.order)

    def op_config(self):
        from bats_tf import ops
        from bats_tf.precision import resolve

        return ops.OpConfig.for_space(
            self.search_space,
            self.activations,
            self.weights,
            groups=self.groups,
            scaling=self.scaling,
            shortcut=self.shortcut,
            pool_bn=True,
            grouped_conv=self.grouped_conv,
            precision=resolve(self.precision),
        )
