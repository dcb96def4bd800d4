import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from bats_tf.genotype import Genotype, GenotypeError
from bats_tf.search_space import BATS_PRIMITIVES
from bats_tf.visualize import alpha_heatmap, cell_image, plot_cell, write_cell_diagrams

GENOTYPE = Genotype(
    normal=(
        ("group_conv_3x3", 0),
        ("dil_group_conv_5x5", 1),
        ("skip_connect", 0),
        ("group_conv_5x5", 2),
        ("max_pool_3x3", 1),
        ("dil_group_conv_3x3", 3),
        ("skip_connect", 2),
        ("avg_pool_3x3", 0),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("dil_group_conv_5x5", 1),
        ("group_conv_5x5", 0),
        ("skip_connect", 2),
        ("avg_pool_3x3", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)


def _genotype(nodes: int) -> Genotype:
    ops = BATS_PRIMITIVES[1:]
    edges = tuple((ops[(k * 3) % len(ops)], (k * 5) % (k // 2 + 2)) for k in range(2 * nodes))
    concat = tuple(range(2, nodes + 2))
    return Genotype(normal=edges, normal_concat=concat, reduce=edges, reduce_concat=concat)


def _svg_text(path) -> str:
    return " ".join(ET.parse(path).getroot().itertext())


def test_write_cell_diagrams(tmp_path):
    paths = write_cell_diagrams(GENOTYPE, str(tmp_path), prefix="best_")
    assert set(paths) == {"normal_png", "normal_svg", "reduce_png", "reduce_svg"}
    assert paths["normal_png"] == str(tmp_path / "best_normal.png")
    for cell in ("normal", "reduce"):
        with Image.open(paths[f"{cell}_png"]) as image:
            image.load()
            width, height = image.size
        assert 400 <= width <= 4000 and 200 <= height <= 3000
        text = _svg_text(paths[f"{cell}_svg"])
        edges, _ = GENOTYPE.cell(cell == "reduce")
        for op, _ in edges:
            assert op in text


@pytest.mark.parametrize("nodes", [2, 5])
def test_other_node_counts(tmp_path, nodes):
    genotype = _genotype(nodes).validate(BATS_PRIMITIVES)
    for reduction in (False, True):
        for ext in ("png", "svg"):
            path = tmp_path / f"cell_{reduction}.{ext}"
            plot_cell(genotype, reduction, str(path))
            assert path.stat().st_size > 0
    with Image.open(tmp_path / "cell_False.png") as image:
        assert min(image.size) >= 200
    assert genotype.normal[-1][0] in _svg_text(tmp_path / "cell_False.svg")


def test_overwrite_is_atomic(tmp_path):
    write_cell_diagrams(_genotype(2), str(tmp_path))
    first = (tmp_path / "normal.svg").read_bytes()
    write_cell_diagrams(GENOTYPE, str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [
        "normal.png",
        "normal.svg",
        "reduce.png",
        "reduce.svg",
    ]
    assert (tmp_path / "normal.svg").read_bytes() != first


def test_plot_cell_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="png or .svg"):
        plot_cell(GENOTYPE, False, str(tmp_path / "cell.pdf"))
    broken = Genotype(
        normal=(("skip_connect", 5),) * 2, normal_concat=(2,), reduce=(), reduce_concat=()
    )
    with pytest.raises(GenotypeError):
        plot_cell(broken, False, str(tmp_path / "cell.png"))
    assert os.listdir(tmp_path) == []


def test_cell_image_matches_png(tmp_path):
    image = cell_image(GENOTYPE, reduction=True)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4)
    plot_cell(GENOTYPE, True, str(tmp_path / "reduce.png"))
    with Image.open(tmp_path / "reduce.png") as png:
        assert image.shape[:2] == (png.height, png.width)
    assert image.min() < 100 and image.max() == 255  # dark lines on a white background


def test_alpha_heatmap():
    weights = np.random.default_rng(0).dirichlet(np.ones(8), size=14)
    image = alpha_heatmap(weights, BATS_PRIMITIVES, "normal", nodes=4)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 200 and image.shape[1] > 200
    with pytest.raises(ValueError, match="14 edges"):
        alpha_heatmap(weights[:10], BATS_PRIMITIVES, "normal", nodes=4)


def test_import_does_not_load_tensorflow():
    code = "import sys, bats_tf.visualize; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
