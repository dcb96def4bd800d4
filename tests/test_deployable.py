"""Deployable search: groups per cell from its width, so that LCE runs every binary conv of
the searched network as LceBconv2d."""

import bats_tf  # noqa: F401

# isort: split
import os

import numpy as np
import pytest
from conftest import tiny_search_config, tiny_train_config

from bats_tf import data, export, network, training, widths
from bats_tf.errors import ConfigError
from bats_tf.genotype import Genotype
from bats_tf.search import Searcher


def test_groups_follow_the_width():
    assert widths.cell_groups(5, 32, 4, deployable=True) == [1, 2, 2, 4, 4]
    assert widths.cell_groups(8, 64, 4, deployable=True) == [2, 2, 4, 4, 4, 8, 8, 8]
    assert widths.cell_groups(5, 32, 4, deployable=False) == [4] * 5


@pytest.mark.parametrize(
    "channels, stem, nodes, smallest",
    [(16, 3, 4, 32), (36, 3, 4, 32), (48, 3, 4, 32), (32, 3, 4, None), (96, 3, 4, None)],
)
def test_too_narrow_names_the_smallest_width_that_works(channels, stem, nodes, smallest):
    if smallest is None:
        widths.check_deployable(channels, stem, nodes)
        return
    with pytest.raises(ConfigError, match=f"smallest width that works is {smallest}$") as e:
        widths.check_deployable(channels, stem, nodes)
    assert e.value.param == "init_channels"


@pytest.fixture(scope="module")
def searched(tiny_folder, tmp_path_factory):
    """A tiny deployable search at 32 channels (groups 1, 2, 4 over its 3 cells)."""
    out = str(tmp_path_factory.mktemp("search"))
    cfg = tiny_search_config(tiny_folder, init_channels=32, deployable=True, epochs=1)
    cfg.check()
    genotype = Searcher(cfg, out, log=lambda *a: None).run()
    return genotype, os.path.join(out, "genotype.json")


def test_search_records_deployable(searched):
    genotype, path = searched
    assert genotype.deployable and Genotype.load(path).deployable


def test_training_refuses_a_deployable_genotype_built_otherwise(searched, tiny_folder, tmp_path):
    _, path = searched
    cfg = tiny_train_config(tiny_folder, genotype=path, init_channels=32)
    out = tmp_path / "train"
    with pytest.raises(ConfigError, match="searched deployable: train it with deployable") as e:
        training.train(cfg, str(out))
    assert e.value.param == "deployable" and not out.exists()


def test_a_searched_deployable_cell_exports_only_lce_bconv2d(searched, tiny_folder, tmp_path):
    """Trained fully binary and exported: every binary conv is an LceBconv2d, the cells'
    grouped convs included (1, 2 and 4 groups of 32 channels over the 3 cells)."""
    genotype, path = searched
    cfg = tiny_train_config(
        tiny_folder, genotype=path, init_channels=32, deployable=True, stages=(2,)
    )
    out = str(tmp_path / "train")
    training.train(cfg, out)
    model = training.load_model(os.path.join(out, training.MODEL_FILE))
    grouped = [c for c in network.binary_convs(model) if c.groups > 1]
    assert {c.groups for c in grouped} == {2, 4}
    raw, info = data.load_split("folder", "test", tiny_folder)
    images = np.concatenate([x.numpy() for x, _ in data.pipeline(raw, info, 16, False)])[:8]
    report = export.export(model, str(tmp_path / "export"), images, threads=(1,), runs=1)
    assert report["lce_bconv2d"] == report["binary_convs"] == len(network.binary_convs(model))
    assert report["binary_convs"] > len(grouped) > 0


def test_the_same_genotype_at_fixed_groups_would_leave_convs_in_float(searched):
    genotype, _ = searched
    plain = Genotype(*[getattr(genotype, f) for f in ("normal", "normal_concat", "reduce")],
                     genotype.reduce_concat, genotype.search_space)  # fmt: skip
    model = network.build_network(plain, 3, 16, init_channels=32, layers=3, groups=4)
    convs = [c for c in network.binary_convs(model) if c.groups == 4]
    assert network.lce_compatibility(model) and convs
