"""What a search writes into its output folder, and when: TensorBoard, ``history.json``, the
genotype of every epoch, ``alphas.json`` and the cell diagrams.

Only the chief writes; on the other workers of a cluster every call writes nothing. Writes
are atomic, so a run killed at any moment leaves each file whole.
"""

from __future__ import annotations

import json
import os

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams

from bats_tf import io_utils, visualize
from bats_tf.genotype import ALPHAS_FILE, Genotype
from bats_tf.io_utils import atomic_write_json, tensorboard_hparams

HISTORY_FILE = "history.json"
GENOTYPE_FILE = "genotype.json"


class SearchLog:
    """The outputs of one search in ``output_dir``.

    # Arguments
        output_dir: the run's folder (local or a ``tf.io.gfile`` path such as ``gs://``).
        chief: whether this process writes (False: every call is a no-op).
        primitives: the search space's op names, in the alphas' column order.
        nodes: intermediate nodes per cell (rows of the heat maps).
    """

    def __init__(self, output_dir: str, chief: bool, primitives, nodes: int):
        self.out, self.chief, self.primitives, self.nodes = output_dir, chief, primitives, nodes
        self.writer = (
            tf.summary.create_file_writer(os.path.join(output_dir, "tb"))
            if chief
            else tf.summary.create_noop_writer()
        )

    def close(self) -> None:
        self.writer.close()

    def settings(self, settings: dict) -> None:
        """The run's settings for TensorBoard's HParams tab (once, at the start)."""
        if self.chief:
            with self.writer.as_default(step=0):
                hparams.hparams(tensorboard_hparams(settings))

    def step(self, step: int, w_loss: float, a_loss: float | None, lrs: dict, temperature: float):
        """One step's scalars; ``a_loss`` None in the warm-up (no curve, not a fake zero)."""
        with self.writer.as_default(step=step):
            tf.summary.scalar("step/weight_loss", w_loss)
            if a_loss is not None:
                tf.summary.scalar("step/arch_loss", a_loss)
            for name, lr in lrs.items():
                tf.summary.scalar(f"lr/{name}", lr)
            tf.summary.scalar("temperature", temperature)

    def history(self, until_step: int) -> list[dict]:
        """The saved epoch records up to ``until_step`` (those of a restored checkpoint)."""
        path = os.path.join(self.out, HISTORY_FILE)
        if not self.chief or not io_utils.exists(path):
            return []
        return [h for h in json.loads(io_utils.read_text(path)) if h["step"] <= until_step]

    def epoch(
        self,
        history: list[dict],
        epoch: int,
        step: int,
        metrics: dict,
        counts: dict,
        temperature: float,
        genotype: Genotype,
        mixing_weights,
        alphas: dict,
        costs: dict | None = None,
    ) -> None:
        """An epoch's end (``epoch`` counts from 1): its record appended to ``history``,
        summaries at the global ``step``, its genotype and the alphas, then ``history.json``.

        ``metrics`` are the epoch's means, ``counts`` the genotype's skip and pool counts,
        ``mixing_weights`` softmax(alpha / T) of (normal, reduce), ``alphas`` what
        ``alphas.json`` holds, ``costs`` the alphas' expected cost and the genotype's
        (:meth:`bats_tf.architect.Architect.costs`).
        """
        if not self.chief:
            return
        history.append(
            {
                "epoch": epoch,
                "step": step,
                **metrics,
                **counts,
                **(costs or {}),
                "temperature": temperature,
                "genotype": genotype.to_dict(),
            }
        )
        with self.writer.as_default(step=step):
            tf.summary.scalar("epoch/epoch", epoch)
            for k, v in metrics.items():
                tf.summary.scalar(f"epoch/{k}", v)
            for k, v in counts.items():
                tf.summary.scalar(f"genotype/{k}", v)
            for k, v in (costs or {}).items():
                tf.summary.scalar(f"cost/{k}", v)
            tf.summary.text("genotype", visualize.genotype_markdown(genotype))
            for name, w in zip(("normal", "reduce"), mixing_weights):
                reduce = name == "reduce"
                heat = visualize.alpha_heatmap(
                    w,
                    self.primitives,
                    f"{name} cell, epoch {epoch} (red: derived)",
                    self.nodes,
                    visualize.derived_cells(genotype, reduce, self.primitives),
                )
                tf.summary.image(f"alphas/{name}", heat[None])
                tf.summary.image(f"cell/{name}", visualize.cell_image(genotype, reduce)[None])
        self.writer.flush()
        self.genotype(genotype, alphas, epoch=epoch)
        atomic_write_json(os.path.join(self.out, HISTORY_FILE), history)

    def genotype(self, genotype: Genotype, alphas: dict, epoch: int | None = None):
        """``genotype.json`` and ``alphas.json`` (and ``genotypes/epoch_NNN.json`` of an epoch;
        without an epoch, the final cell diagrams)."""
        if not self.chief:
            return
        if epoch is not None:
            genotype.save(os.path.join(self.out, "genotypes", f"epoch_{epoch:03d}.json"))
        genotype.save(os.path.join(self.out, GENOTYPE_FILE))
        atomic_write_json(os.path.join(self.out, ALPHAS_FILE), alphas)
        if epoch is None:
            visualize.write_cell_diagrams(genotype, self.out)
