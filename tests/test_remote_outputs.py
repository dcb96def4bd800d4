"""Outputs on a TensorFlow file system other than the local one (``gs://`` on a cluster):
here ``ram://``, which lives in this process. Nothing may land in a local folder."""

import bats_tf  # noqa: F401

# isort: split
import os

import pytest
import tensorflow as tf
from conftest import tiny_search_config, tiny_train_config

from bats_tf import training
from bats_tf.genotype import Genotype
from bats_tf.search import Searcher


@pytest.mark.slow
def test_search_and_train_write_to_a_remote_folder(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    search_out, train_out = "ram://bats/search", "ram://bats/train"
    cfg = tiny_search_config(tiny_folder, warmup_epochs=1, batch_size=8, deterministic=False)
    Searcher(cfg, search_out, log=lambda *_: None).run()
    for name in ("genotype.json", "alphas.json", "history.json", "normal.png", "reduce.svg"):
        assert tf.io.gfile.exists(f"{search_out}/{name}"), name
    assert tf.io.gfile.glob(f"{search_out}/tb/events.out.*")
    genotype = Genotype.load(f"{search_out}/genotype.json")
    config = tiny_train_config(tiny_folder, genotype=f"{search_out}/genotype.json")
    result = training.train(config, train_out)
    assert result["params"] > 0 and genotype.normal
    model = training.load_model(f"{train_out}/{training.MODEL_FILE}")
    assert model.count_params() == result["params"]
    assert tf.io.gfile.exists(f"{train_out}/metrics.json")
    assert os.listdir(tmp_path) == []  # no local folder named "ram:"
