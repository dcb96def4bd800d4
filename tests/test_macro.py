"""The macro structure shared by the supernet and the final network."""

import subprocess
import sys

import pytest

from bats_tf import macro, widths


@pytest.mark.parametrize(
    "layers,expected", [(8, (2, 5)), (5, (1, 3)), (3, (1, 2)), (6, (2, 4)), (20, (6, 13))]
)
def test_reduction_layers(layers, expected):
    assert widths.reduction_layers(layers) == expected


def test_cell_plan_doubles_the_width_at_reductions():
    assert widths.cell_plan(5, 8) == [(8, False), (16, True), (16, False), (32, True), (32, False)]
    assert widths.cell_plan(2, 8) == [(8, False), (8, False)]


def test_edge_stride():
    assert [macro.edge_stride(True, j) for j in range(4)] == [2, 2, 1, 1]
    assert [macro.edge_stride(False, j) for j in range(4)] == [1, 1, 1, 1]


def test_network_does_not_load_the_supernet():
    """The final network needs neither the supernet nor the fused cells and their kernels."""
    code = (
        "import sys, bats_tf.network; "
        "print(sorted(m for m in sys.modules if m.startswith('bats_tf.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loaded = proc.stdout.strip().splitlines()[-1]
    assert "bats_tf.network" in loaded
    for module in ("bats_tf.supernet", "bats_tf.fused", "bats_tf.fused_kernels"):
        assert f"'{module}'" not in loaded
