"""What TensorBoard shows of a search and a training: the event files, tab by tab."""

import bats_tf  # noqa: F401

# isort: split
import glob
import os

import numpy as np
import pytest
from conftest import tiny_search_config, tiny_train_config
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from bats_tf import training
from bats_tf.search import Searcher
from bats_tf.visualize import alpha_heatmap, derived_cells, genotype_markdown


def _events(folder):
    """Every event file under ``folder``, loaded with TensorBoard's own reader, by run."""
    runs = {}
    for path in glob.glob(os.path.join(folder, "**", "events.out.*"), recursive=True):
        acc = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0, "images": 0})
        acc.Reload()
        runs[os.path.relpath(os.path.dirname(path), folder)] = acc
    return runs


def _steps(acc, tag):
    return [e.step for e in acc.Tensors(tag)]


def _hparams(acc):
    """The hparams of a run's session-start summary (what the HParams tab lists)."""
    data = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    info = hparams_metadata.parse_session_start_info_plugin_data(
        data[hparams_metadata.SESSION_START_INFO_TAG]
    )
    return {
        k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
        for k, v in info.hparams.items()
    }


@pytest.mark.slow
def test_search_tabs(tiny_folder, tmp_path):
    cfg = tiny_search_config(  # 3 steps per epoch
        tiny_folder, epochs=3, warmup_epochs=1, seed=1, temperature=0.5, deterministic=False
    )
    out = str(tmp_path / "run")
    Searcher(cfg, out, log=lambda *_: None).run()
    (acc,) = _events(os.path.join(out, "tb")).values()
    # Time Series: one x axis (the global step); no architecture curve in the warm-up.
    assert _steps(acc, "step/weight_loss") == list(range(1, 10))
    assert _steps(acc, "step/arch_loss") == list(range(4, 10))
    assert _steps(acc, "epoch/w_loss") == [3, 6, 9]
    assert _steps(acc, "epoch/a_loss") == [6, 9]
    # Images: a heat map and a cell per epoch, at the same steps.
    assert [e.step for e in acc.Tensors("alphas/normal")] == [3, 6, 9]
    assert [e.step for e in acc.Tensors("cell/reduce")] == [3, 6, 9]
    # Text: a compact table, one row per edge and one for the concat, per cell.
    text = acc.Tensors("genotype")[-1].tensor_proto.string_val[0].decode()
    lines = text.splitlines()
    assert lines[0] == "| cell | node | input | op |"
    assert len(lines) == 2 + 2 * (2 * cfg.nodes + 1)
    # HParams: the run's settings.
    hparams = _hparams(acc)
    assert hparams["temperature"] == 0.5 and hparams["search_space"] == "bats"
    assert hparams["warmup_epochs"] == 1


def test_heatmap_scale_is_fixed_and_marks_the_derived_ops():
    from bats_tf.genotype import derive
    from bats_tf.search_space import BATS_PRIMITIVES

    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(len(BATS_PRIMITIVES)), size=5)  # 2 nodes: 5 edges
    genotype = derive(w, w, "bats")
    derived = derived_cells(genotype, False, BATS_PRIMITIVES)
    assert len(derived) == 4 and all(BATS_PRIMITIVES[c] != "none" for _, c in derived)
    plain = alpha_heatmap(w, BATS_PRIMITIVES, "t", nodes=2)
    # Halving every weight darkens the map: the colours do not rescale to the maximum.
    darker = alpha_heatmap(w / 2, BATS_PRIMITIVES, "t", nodes=2)
    assert darker.mean() < plain.mean()
    marked = alpha_heatmap(w, BATS_PRIMITIVES, "t", nodes=2, derived=derived)
    red = (marked[..., 0] > 200) & (marked[..., 1] < 60) & (marked[..., 2] < 60)
    assert (
        red.sum() > 100
        and not ((plain[..., 0] > 200) & (plain[..., 1] < 60) & (plain[..., 2] < 60)).any()
    )
    assert "| normal | out | 0, 1 | concat |" in genotype_markdown(genotype)


@pytest.mark.slow
def test_training_tabs(tiny_folder, tmp_path):
    cfg = tiny_train_config(tiny_folder, epochs=2, lr=1e-3)
    out = str(tmp_path / "run")
    training.train(cfg, out)
    runs = _events(os.path.join(out, "stage1", "logs"))
    # One learning-rate curve, Keras's.
    train_tags = runs["train"].Tags()["tensors"]
    assert "epoch_learning_rate" in train_tags and "epoch_lr" not in train_tags
    assert "epoch_top1" in runs["validation"].Tags()["tensors"]
    hparams = _hparams(runs["."])
    assert hparams["lr"] == pytest.approx(1e-3) and hparams["genotype"] == "bats_paper"
    assert hparams["stage"] == "stage1"
    summary = open(os.path.join(out, "stage1", training.SUMMARY_FILE)).read()
    assert "Binarized" in summary or "bit" in summary.lower()
    assert os.path.exists(os.path.join(out, training.SUMMARY_FILE))
