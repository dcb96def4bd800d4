"""bats-plot: draws the cells of a genotype (a JSON file or a built-in name) as PNG or SVG.

    bats-plot --genotype=bats_paper --output=bats_paper.svg

writes ``bats_paper_normal.svg`` and ``bats_paper_reduce.svg`` (``--cell=normal`` or
``--cell=reduce``: that cell alone, to ``--output``).
"""

from __future__ import annotations

import os

from absl import flags

from bats_tf.commands import common

FLAGS = flags.FLAGS
flags.DEFINE_string("genotype", None, "Genotype JSON, bats_paper, darts_v2 or random:SEED[:SPACE].")
flags.DEFINE_string("output", None, "Diagram file, .png or .svg.")
flags.DEFINE_enum("cell", "both", ["both", "normal", "reduce"], "Cell(s) drawn.")


def outputs() -> dict[str, str]:
    """The file of each cell drawn."""
    stem, ext = os.path.splitext(FLAGS.output)
    if FLAGS.cell != "both":
        return {FLAGS.cell: FLAGS.output}
    return {cell: f"{stem}_{cell}{ext}" for cell in ("normal", "reduce")}


def main(argv):
    common.check_no_arguments(argv)
    common.check(FLAGS.genotype, "--genotype is required")
    common.check(FLAGS.output, "--output is required")
    common.check(
        os.path.splitext(FLAGS.output)[1].lower() in (".png", ".svg"),
        f"--output={FLAGS.output}: expected a .png or .svg file",
    )
    common.check_writable_dir(os.path.dirname(os.path.abspath(FLAGS.output)), "--output")
    if FLAGS.genotype.endswith(".json") or os.path.isfile(FLAGS.genotype):
        from bats_tf.genotype import Genotype

        genotype = Genotype.load(FLAGS.genotype)
    else:
        common.start_tensorflow()  # built-in names live in bats_tf.network
        from bats_tf.network import resolve_genotype

        genotype = resolve_genotype(FLAGS.genotype)
    from bats_tf import visualize

    for cell, path in outputs().items():
        visualize.plot_cell(genotype, cell == "reduce", path)
        print(f"written: {path}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
