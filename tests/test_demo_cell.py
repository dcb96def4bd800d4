"""The demo's search finds a cell with binary convolutions, not the parameter-free collapse."""

import os
import subprocess
import sys

import pytest

from bats_tf.genotype import Genotype, parameter_free_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_search_derives_binary_convolutions(tmp_path, seed):
    out = tmp_path / "search"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "scripts", "search.py"),
        "--flagfile=configs/demo_search.cfg",
        f"--seed={seed}",
        f"--output_dir={out}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    genotype = Genotype.load(str(out / "genotype.json"))
    convs = [op for op, _ in genotype.normal if "conv" in op]
    assert len(convs) >= 2, f"seed {seed}: normal cell {genotype.normal}"
    assert parameter_free_ops(genotype)["normal"] == len(genotype.normal) - len(convs)
