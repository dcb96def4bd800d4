"""The op spec table and the resolved search spaces: every formulation reads the same table."""

import bats_tf  # noqa: F401

# isort: split
import dataclasses
import importlib

import pytest
import tensorflow as tf
from test_fused import C, G, check_fused_state_matches_reference

from bats_tf import op_specs, ops, search_space, supernet
from bats_tf.op_specs import OP_SPECS
from bats_tf.search_space import Space, get_space
from benchmarks import evalnet

# (op, changed field): a kernel size and a dilation that no formulation hard-codes.
CHANGES = [("group_conv_3x3", dict(kernel=5)), ("dil_group_conv_3x3", dict(dilation=3))]


@pytest.mark.parametrize("op,change", CHANGES, ids=["kernel", "dilation"])
def test_a_spec_change_reaches_every_formulation(op, change, monkeypatch):
    spec = dataclasses.replace(OP_SPECS[op], **change)
    with monkeypatch.context() as m:
        m.setitem(OP_SPECS, op, spec)
        k = spec.kernel
        # The reference Keras op.
        x = tf.keras.Input((8, 8, C))
        cfg = ops.OpConfig(groups=G)
        model = tf.keras.Model(x, ops.apply_op(op, x, C, 1, cfg, "op"))
        layer = model.get_layer("op_conv")
        assert layer.kernel.shape == (k, k, C // G, C)
        assert layer.dilation_rate == (spec.dilation, spec.dilation)
        # The fused layer (both formulations) against the reference supernet's edges.
        for stride in (1, 2):
            for impl in ("tf", "native"):
                fused = check_fused_state_matches_reference(stride, True, impl)
                kernel = fused.kernels[fused.convs.index(op)]
                assert kernel.shape == (k, k, C // G, 3 * C)
        # A whole fused supernet.
        net = supernet.build_supernet(
            "bats", 10, 16, C, 3, 1, op_config=ops.OpConfig(groups=G), fused_kernels="tf"
        )
        kernels = [v for v in net.weights if v.name.endswith(f"kernel_{op}:0")]
        assert kernels and all(v.shape[:2] == (k, k) for v in kernels)
        # The benchmark's names of the ops in the first author's library.
        importlib.reload(evalnet)
        bnn = evalnet.BNN_OPS[op]
    importlib.reload(evalnet)
    assert bnn == f"{'dil' if spec.dilation > 1 else 'sep'}_conv_{k}x{k}"
    assert evalnet.BNN_OPS == BNN_OPS


BNN_OPS = {
    "group_conv_3x3": "sep_conv_3x3",
    "group_conv_5x5": "sep_conv_5x5",
    "dil_group_conv_3x3": "dil_conv_3x3",
    "dil_group_conv_5x5": "dil_conv_5x5",
}


def test_specs_cover_the_search_spaces():
    for name, primitives in search_space.SPACES.items():
        assert set(primitives) <= set(OP_SPECS), name
    assert all(spec.kind in op_specs.KINDS for spec in OP_SPECS.values())
    assert search_space.PARAMETER_FREE == ("max_pool_3x3", "avg_pool_3x3", "skip_connect")
    assert evalnet.BNN_OPS == BNN_OPS


@pytest.mark.parametrize("size,kernel,stride,dilation", [(8, 3, 1, 1), (7, 5, 2, 2), (8, 1, 2, 1)])
def test_same_padding_is_tensorflows(size, kernel, stride, dilation):
    before, after = op_specs.same_padding(size, kernel, stride, dilation)
    x = tf.ones((1, size, size, 1))
    w = tf.ones((kernel, kernel, 1, 1))
    same = tf.nn.conv2d(x, w, stride, "SAME", dilations=dilation)
    padded = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]])
    valid = tf.nn.conv2d(padded, w, stride, "VALID", dilations=dilation)
    tf.debugging.assert_equal(same, valid)


def test_get_space_resolves_once():
    space = get_space("darts_binary")
    assert isinstance(space, Space) and get_space(space) is space
    assert space.primitives == search_space.DARTS_PRIMITIVES and space.binary
    assert space.spec("sep_conv_5x5") == OP_SPECS["sep_conv_5x5"]
    assert not get_space("darts").binary
    with pytest.raises(KeyError, match="unknown search space 'nas'"):
        get_space("nas")


def test_entry_points_take_a_space_or_its_name():
    space = get_space("bats")
    assert ops.OpConfig.for_space(space, "real") == ops.OpConfig.for_space("bats", "real")
    assert supernet.can_fuse(space) and not supernet.can_fuse(get_space("darts"))
    arch = supernet.Architecture(space, 2)
    assert arch.space == "bats" and arch.primitives == space.primitives
