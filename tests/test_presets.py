"""The CIFAR-10 presets are what their comments say: the paper's model, and a deployable one."""

import bats_tf  # noqa: F401

# isort: split
import os
import re

import pytest
from absl import flags

from bats_tf import metrics, network
from bats_tf.commands import common
from bats_tf.train_config import TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = re.compile(
    r"([\d.]+)M params, ([\d.]+)G BOPs, ([\d.]+)M FLOPs, ([\d.]+)M OPs(?:; all (\d+) binary"
    r" convs become LceBconv2d|\. .*?: (\d+) of its (\d+) binary convs run in float)"
)


def preset(name: str) -> tuple[TrainConfig, str]:
    """The config a preset gives (as the train command parses it) and its comment text."""
    fv = flags.FlagValues()
    common.define_flags(TrainConfig, flag_values=fv)
    cwd = os.getcwd()
    os.chdir(ROOT)  # presets name each other relative to the checkout
    try:
        fv(["prog", f"--flagfile=configs/{name}.cfg"])
    finally:
        os.chdir(cwd)
    with open(os.path.join(ROOT, "configs", f"{name}.cfg")) as f:
        comments = " ".join(line[1:].strip() for line in f if line.startswith("#"))
    return common.config_from_flags(TrainConfig, fv), comments


@pytest.mark.parametrize("name", ["train_cifar10_paper", "train_cifar10_deployable"])
def test_a_preset_costs_what_its_comment_says(name):
    config, comments = preset(name)
    params, bops, flops, ops, *convs = FIGURES.search(comments).groups()
    kwargs = {**config.network_kwargs(), "precision": "float32"}
    model = network.build_network(config.genotype, 10, 32, **kwargs)
    figures = metrics.complexity(network.inference_model(model))
    assert f"{figures['params'] / 1e6:.2f}" == params
    assert f"{figures['bops'] / 1e9:.3f}" == bops
    assert f"{figures['flops'] / 1e6:.1f}" == flops and f"{figures['ops'] / 1e6:.1f}" == ops
    binary, left = len(network.binary_convs(model)), len(network.lce_compatibility(model))
    if config.deployable:
        assert int(convs[0]) == binary and left == 0
    else:
        assert (int(convs[1]), int(convs[2])) == (left, binary) and left > 0


def test_the_paper_preset_is_the_papers_model():
    config, _ = preset("train_cifar10_paper")
    assert (config.init_channels, config.layers, config.groups) == (36, 20, 12)
    assert not config.deployable and config.stages == (1, 2)
    deployable, _ = preset("train_cifar10_deployable")
    assert deployable.deployable and deployable.strict_lce and deployable.init_channels == 32
    same = ("layers", "epochs", "lr", "optimizer", "stages", "teacher", "drop_path")
    assert all(getattr(config, k) == getattr(deployable, k) for k in same)
