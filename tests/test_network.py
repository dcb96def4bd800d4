"""Genotype -> network: built-in genotypes, macro structures, binary convs, drop-path, LCE check."""

import bats_tf  # noqa: F401

# isort: split
import logging

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from bats_tf import network
from bats_tf.errors import ConfigError
from bats_tf.genotype import GenotypeError
from bats_tf.search_space import primitives_of
from bats_tf.widths import reduction_layers

CONV_OPS = ("group_conv", "sep_conv", "dil_conv")


def expected_binary_convs(genotype, layers, structure="cifar"):
    """Binary convs a genotype implies: preprocess 1x1 convs and those inside conv ops."""
    per_op = {"sep": 4, "dil": 2}  # darts ops: depthwise + pointwise, twice for separable
    count, reduction_prev = 0, structure == "imagenet"
    for i in range(layers):
        reduction = i in reduction_layers(layers)
        count += 1 if reduction_prev else 2
        for op, _ in genotype.cell(reduction)[0]:
            if op.startswith("group_conv") or op.startswith("dil_group_conv"):
                count += 1
            elif op.split("_")[0] in per_op:
                count += per_op[op.split("_")[0]]
        reduction_prev = reduction
    return count


@pytest.mark.parametrize("name", sorted(network.BUILTIN))
def test_builtin_genotypes_are_valid(name):
    genotype = network.resolve_genotype(name)
    assert genotype.validate(primitives_of(genotype.search_space)) is genotype
    assert genotype.nodes == 4


def test_darts_v2_is_the_published_cell():
    g = network.resolve_genotype("darts_v2")
    assert g.search_space == "darts"
    assert [op for op, _ in g.normal].count("sep_conv_3x3") == 5
    assert g.normal[-1] == ("dil_conv_3x3", 2) and g.reduce[2] == ("skip_connect", 2)


def test_random_genotypes(tmp_path):
    a, b = network.resolve_genotype("random:3"), network.resolve_genotype("random:3")
    assert a == b and a.search_space == "bats"
    assert network.resolve_genotype("random:4") != a
    d = network.resolve_genotype("random:3:darts_binary")
    assert d.search_space == "darts_binary"
    for node in range(4):  # two distinct inputs per node
        assert a.normal[2 * node][1] != a.normal[2 * node + 1][1]
    path = str(tmp_path / "g.json")
    a.save(path)
    assert network.resolve_genotype(path) == a


@pytest.mark.parametrize(
    "spec, error, match",
    [
        ("nope", ConfigError, "^genotype=nope: not a genotype file, a built-in name"),
        ("random:x", ConfigError, "^genotype=random:x: expected random:SEED or random:SEED:SPACE"),
        ("random:1:nospace", GenotypeError, "^unknown search space 'nospace'"),
        ("missing.json", GenotypeError, "^missing.json: no such genotype file$"),
    ],
)
def test_bad_genotype_specs(spec, error, match):
    with pytest.raises(error, match=match):
        network.resolve_genotype(spec)


@pytest.mark.parametrize(
    "name, kw",
    [
        ("bats_paper", dict(init_channels=32, groups=1)),
        ("random:5", dict(init_channels=64, groups=2)),
        ("darts_v2", dict(init_channels=16, search_space="darts_binary")),
    ],
)
def test_cifar_network(name, kw):
    model = network.build_network(name, 10, 32, layers=5, **kw)
    genotype = network.resolve_genotype(name)
    assert model.output_shape == (None, 10)
    assert model.get_layer("stem_conv").filters == 3 * kw["init_channels"]
    convs = network.binary_convs(model)
    assert len(convs) == expected_binary_convs(genotype, 5)
    assert all(isinstance(c, lq.layers.QuantConv2D | lq.layers.QuantDepthwiseConv2D) for c in convs)
    # reductions at 1/3 and 2/3 of the depth double the width and halve the resolution
    assert model.get_layer("cell4_out").output_shape == (None, 8, 8, 4 * 4 * kw["init_channels"])
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    assert "Total MACs" in "\n".join(lines) or "MACs" in "\n".join(lines)


def test_real_space_and_stage1_have_no_binary_convs():
    assert not network.binary_convs(
        network.build_network("darts_v2", 10, 32, init_channels=16, layers=3)
    )
    stage1 = network.build_network(
        "bats_paper", 10, 32, init_channels=32, layers=3, groups=1, weights="real"
    )
    assert not network.binary_convs(stage1)
    conv = stage1.get_layer("cell0_e0_conv")
    assert conv.input_quantizer.precision == 1 and conv.kernel_quantizer is None


def test_imagenet_network():
    model = network.build_network(
        "bats_paper", 1000, 224, structure="imagenet", init_channels=32, layers=3, groups=1
    )
    assert model.output_shape == (None, 1000)
    assert model.get_layer("stem0b_bn").output_shape == (None, 56, 56, 32)
    assert model.get_layer("stem1_bn").output_shape == (None, 28, 28, 32)
    assert model.get_layer("cell0_pre0_fr1").strides == (2, 2)  # reduction_prev after the stems
    assert model.get_layer("cell2_out").output_shape == (None, 7, 7, 4 * 128)
    genotype = network.resolve_genotype("bats_paper")
    assert len(network.binary_convs(model)) == expected_binary_convs(genotype, 3, "imagenet")
    assert not network.lce_compatibility(model)
    lq.models.summary(model, print_fn=lambda _: None)


def test_auxiliary_head_and_inference_model():
    model = network.build_network(
        "bats_paper", 10, 32, init_channels=8, layers=6, groups=1, auxiliary=True
    )
    assert [tuple(o.shape) for o in model.outputs] == [(None, 10), (None, 10)]
    assert model.get_layer("aux_relu0").input.shape[1] == 8  # after cell 2*6//3 = 4
    assert model.get_layer("aux_conv0").input.shape[1] == 2  # 5x5 average pool, stride 3
    single = network.inference_model(model)
    assert len(single.outputs) == 1 and single.count_params() < model.count_params()


def test_drop_path(tmp_path):
    model = network.build_network(
        "bats_paper", 10, 16, init_channels=8, layers=3, groups=1, drop_path=0.5
    )
    drops = network.drop_path_layers(model)
    genotype = network.resolve_genotype("bats_paper")
    identities = sum(op == "skip_connect" for op, _ in genotype.normal + genotype.reduce)
    assert len(drops) == 8 + 2 * 8 - identities
    x = np.random.RandomState(0).randn(8, 16, 16, 3).astype("float32")
    np.testing.assert_array_equal(model(x, training=False), model(x, training=False))
    layer = drops[0]
    y = np.ones((64, 2, 2, 3), "float32")
    out = layer(y, training=True).numpy()
    kept = out[:, 0, 0, 0] > 0
    assert 0 < kept.sum() < 64 and np.allclose(out[kept], 2.0)  # kept outputs scaled by 1/keep
    layer.ramp.assign(0.0)
    np.testing.assert_array_equal(layer(y, training=True), y)
    assert network.DropPath.from_config(layer.get_config()).rate == 0.5
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = tf.keras.models.load_model(path, custom_objects=network.CUSTOM_OBJECTS)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)


def test_lce_compatibility_warns_or_raises(caplog):
    kw = dict(init_channels=48, layers=3, groups=3)  # 16 input channels per group
    with caplog.at_level(logging.WARNING):
        model = network.build_network("bats_paper", 10, 16, **kw)
    found = network.lce_compatibility(model)
    assert found and all(f["per_group"] % 32 for f in found)
    assert "cell0_e0_conv" in {f["layer"] for f in found}
    assert "will not become LceBconv2d" in caplog.text and "cell0_e0_conv" in caplog.text
    with pytest.raises(network.LceCompatibilityError, match="cell0_e0_conv"):
        network.build_network("bats_paper", 10, 16, strict_lce=True, **kw)
    ok = network.build_network("bats_paper", 10, 16, init_channels=64, layers=3, groups=2)
    assert not network.lce_compatibility(ok)
