"""The demo's search finds cells with binary convolutions, not the parameter-free collapse.

Seeds 0 and 1 of the demo search derive normal cells with 3 and 2 binary convs. Seed 2
derived 3 of them until reduction cells' stride-2 branches were put on one pixel grid, and
has derived a normal cell of pools and skips since (README, "What the search does"), so it
is not run here. One test per seed, so that two test workers run them side by side.
"""

import os
import subprocess
import sys

import pytest
from conftest import RUN_TIMEOUT

from bats_tf.genotype import Genotype, parameter_free_ops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@pytest.mark.timeout(3600)  # a few minutes; far more on a machine the host slows down
@pytest.mark.parametrize("seed", [0, 1])
def test_demo_search_derives_binary_convolutions(tmp_path, seed):
    out = tmp_path / "search"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "scripts", "search.py"),
        "--flagfile=configs/demo_search.cfg",
        f"--seed={seed}",
        f"--output_dir={out}",
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    genotype = Genotype.load(str(out / "genotype.json"))
    convs = [op for op, _ in genotype.normal if "conv" in op]
    assert parameter_free_ops(genotype)["normal"] == len(genotype.normal) - len(convs)
    assert len(convs) >= 2, genotype.normal
