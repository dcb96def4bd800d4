"""Dataset names and the fixed partition of a split, known before TensorFlow loads.

:mod:`bats_tf.data` loads the data; see its docstring for the partition. No TensorFlow.
"""

from __future__ import annotations

from bats_tf.errors import ConfigError
from bats_tf.settings import setting

DATASETS = ("cifar10", "cifar100", "imagenet2012", "folder", "cifar10_mini")
PARTITION_SEED = 0  # the partition's permutation; independent of any run's --seed
PARTITION = {  # part: [start, stop) fractions of the permutation (see bats_tf.data)
    "search_weights": (0.0, 0.25),
    "search_arch": (0.25, 0.5),
    "final_train": (0.5, 0.8),
    "val": (0.8, 1.0),
    "train": (0.0, 0.8),
}
PARTS = tuple(PARTITION)
SEARCH_PARTS = ("search_weights", "search_arch")


def dataset_setting(default: str, used_as: str):
    """The ``dataset`` setting; ``used_as`` says what the command does with it."""
    return setting(
        default,
        f"{used_as}: tfds name, an image folder (root/<split>/<label>/*), or the embedded "
        "subset cifar10_mini.",
        choices=DATASETS,
    )


DATA_DIR_HELP = "tfds data folder, or the root of an image folder."
SPLIT_HELP = "Split name (any split folder of a folder dataset)."


def check_data(dataset: str, data_dir: str | None) -> None:
    """``dataset`` and ``data_dir`` fit together."""
    if dataset == "folder" and not data_dir:
        raise ConfigError("data_dir", "required with dataset=folder")
    if dataset == "cifar10_mini" and data_dir is not None:
        raise ConfigError(
            "data_dir", "not used with dataset=cifar10_mini (it ships with the package)", data_dir
        )
