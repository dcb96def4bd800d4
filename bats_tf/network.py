"""The final network: a genotype rebuilt as a functional Keras model of Larq layers.

Cells use the same op builders as the supernet (:mod:`bats_tf.ops`), so every binary
convolution is a plain ``QuantConv2D`` that Larq's summary counts and Larq Compute Engine
(LCE) converts into ``LceBconv2d``, provided its input channels per group are a multiple
of 32 (see :func:`lce_compatibility`).

Macro structures (DARTS, shared with the supernet in :mod:`bats_tf.macro`):
  cifar     real 3x3 stem (``stem_multiplier * C`` channels), ``layers`` cells, reduction
            cells at 1/3 and 2/3 of the depth (width doubles), global pool, real classifier.
  imagenet  two real stride-2 stems (224 -> 56 -> 28), then cells as above, the first one
            reducing its older input (``reduction_prev``).

Genotypes by name: ``bats_paper``, ``darts_v2``, ``random:SEED`` or ``random:SEED:SPACE``.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import dataclasses
import os

import larq as lq
import numpy as np
import tensorflow as tf
from absl import logging

from bats_tf import macro, ops, widths
from bats_tf import precision as precision_lib
from bats_tf.errors import ConfigError
from bats_tf.genotype import Genotype, GenotypeError
from bats_tf.op_specs import BN_EPSILON, BN_MOMENTUM
from bats_tf.search_space import get_space, primitives_of
from bats_tf.train_config import STRUCTURES
from bats_tf.widths import LCE_CHANNELS, check_deployable

_CONCAT = (2, 3, 4, 5)

BATS_PAPER = Genotype(
    normal=(
        ("group_conv_5x5", 0),
        ("dil_group_conv_5x5", 1),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 2),
        ("group_conv_5x5", 0),
        ("dil_group_conv_5x5", 2),
        ("group_conv_3x3", 0),
        ("dil_group_conv_5x5", 1),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0),
        ("group_conv_3x3", 1),
        ("group_conv_5x5", 0),
        ("avg_pool_3x3", 1),
        ("group_conv_5x5", 1),
        ("max_pool_3x3", 3),
        ("group_conv_5x5", 0),
        ("group_conv_5x5", 1),
    ),
    reduce_concat=_CONCAT,
    search_space="bats",
)
"""The BATS CIFAR-10 cells as transcribed by a public third-party reimplementation.

Unverified: the authors released no code and the published cell diagram was not checked
against this transcription. It uses only BATS-space ops, mostly (dilated) 5x5 group convs.
"""

DARTS_V2 = Genotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    normal_concat=_CONCAT,
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=_CONCAT,
    search_space="darts",
)
"""The DARTS V2 cells (Liu et al., ICLR 2019), in the real-valued DARTS space."""

BUILTIN = {"bats_paper": BATS_PAPER, "darts_v2": DARTS_V2}


class LceCompatibilityError(ValueError):
    """Binary convolutions that LCE would not turn into ``LceBconv2d``."""


def random_genotype(seed: int, space: str = "bats", nodes: int = 4) -> Genotype:
    """A uniformly random valid genotype: 2 distinct inputs and a non-``none`` op per node."""
    try:
        ops_ = [p for p in primitives_of(space) if p != "none"]
    except KeyError as e:
        raise GenotypeError(e.args[0]) from None
    rng = np.random.RandomState(seed)

    def cell():
        edges = []
        for i in range(nodes):
            for j in sorted(rng.choice(i + 2, 2, replace=False)):
                edges.append((ops_[rng.randint(len(ops_))], int(j)))
        return tuple(edges)

    concat = tuple(range(2, nodes + 2))
    return Genotype(cell(), concat, cell(), concat, space).validate(primitives_of(space))


def resolve_genotype(spec) -> Genotype:
    """A genotype from an object, a JSON path, a built-in name or ``random:SEED[:SPACE]``."""
    if isinstance(spec, Genotype):
        return spec.validate(primitives_of(spec.search_space))
    spec = str(spec)
    if spec in BUILTIN:
        return BUILTIN[spec]
    if spec.startswith("random:"):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            raise ConfigError("genotype", "expected random:SEED or random:SEED:SPACE", spec)
        return random_genotype(int(parts[1]), *(parts[2:] or ["bats"]))
    if os.path.exists(spec) or spec.endswith(".json"):
        return Genotype.load(spec)
    raise ConfigError(
        "genotype",
        f"not a genotype file, a built-in name ({', '.join(BUILTIN)}) or random:SEED[:SPACE]",
        spec,
    )


@ops.serializable
class DropPath(tf.keras.layers.Layer):
    """Drops a whole op output per example with probability ``rate * ramp`` while training.

    Kept outputs are scaled by ``1 / keep``. ``ramp`` (0..1, default 1) is set during training
    by :class:`DropPathRamp`, as DARTS raises the rate linearly over the epochs. Identity at
    inference; a training-only layer (its ramp is a weight), left out of deployed models.
    """

    def __init__(self, rate: float, **kwargs):
        super().__init__(**kwargs)
        self.rate = float(rate)

    def build(self, input_shape):
        self.ramp = self.add_weight("ramp", (), initializer="ones", trainable=False)

    def call(self, x, training=None):
        if not training or self.rate <= 0.0:
            return x
        keep = 1.0 - self.rate * self.ramp
        shape = tf.stack([tf.shape(x)[0], 1, 1, 1])
        mask = tf.floor(keep + tf.random.uniform(shape, dtype=x.dtype))
        return x / keep * mask

    def get_config(self):
        return {**super().get_config(), "rate": self.rate}


class DropPathRamp(tf.keras.callbacks.Callback):
    """Sets every DropPath layer's ramp to ``epoch / epochs`` at the start of each epoch."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        for layer in drop_path_layers(self.model):
            layer.ramp.assign(epoch / self.epochs)


def drop_path_layers(model) -> list[DropPath]:
    """The DropPath layers of a model (and of the models nested in it)."""
    return [layer for layer in flat_layers(model) if isinstance(layer, DropPath)]


def flat_layers(model):
    """The layers of a model, those of nested models in place of the nested models."""
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            yield from flat_layers(layer)
        else:
            yield layer


def cell(s0, s1, genotype, channels, reduction, reduction_prev, op_config, drop_path, name):
    """A DARTS cell with the genotype's ops; its output concatenates the chosen states."""
    s0, s1 = macro.cell_inputs(s0, s1, channels, reduction_prev, op_config, name)
    edges, concat = genotype.cell(reduction)
    if reduction and (0 in concat or 1 in concat):
        raise GenotypeError("reduce_concat: cannot hold the unreduced cell inputs 0 and 1")
    states = [s0, s1]
    for i in range(len(edges) // 2):
        terms = []
        for k in (2 * i, 2 * i + 1):
            op, j = edges[k]
            stride = macro.edge_stride(reduction, j)
            y = ops.apply_op(op, states[j], channels, stride, op_config, f"{name}_e{k}")
            if drop_path > 0 and y is not states[j]:
                y = DropPath(drop_path, name=f"{name}_e{k}_drop")(y)
            terms.append(y)
        states.append(tf.keras.layers.Add(name=f"{name}_n{i}")(terms))
    chosen = [states[i] for i in concat]
    if len(chosen) == 1:
        return chosen[0]
    return tf.keras.layers.Concatenate(name=f"{name}_out")(chosen)


def imagenet_stems(images, channels):
    """DARTS ImageNet stems, real-valued: (224 -> 112 -> 56) and (56 -> 28)."""
    s0 = macro.conv_bn(images, channels // 2, 2, "stem0a")
    s0 = macro.conv_bn(s0, channels, 2, "stem0b", relu_first=True)
    s1 = macro.conv_bn(s0, channels, 2, "stem1", relu_first=True)
    return s0, s1


def auxiliary_head(x, num_classes, name="aux"):
    """DARTS auxiliary classifier, real-valued: ReLU, 5x5 avg pool, 1x1 and 2x2 convs, dense."""
    size = x.shape[1]
    stride = 3 if size <= 8 else 2
    y = tf.keras.layers.ReLU(name=f"{name}_relu0")(x)
    y = tf.keras.layers.AveragePooling2D(min(5, size), stride, name=f"{name}_pool")(y)
    for i, (filters, kernel) in enumerate(((128, 1), (768, min(2, y.shape[1])))):
        y = tf.keras.layers.Conv2D(filters, kernel, use_bias=False, name=f"{name}_conv{i}")(y)
        y = tf.keras.layers.BatchNormalization(
            momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=f"{name}_bn{i}"
        )(y)
        y = tf.keras.layers.ReLU(name=f"{name}_relu{i + 1}")(y)
    y = tf.keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(y)
    return tf.keras.layers.Dense(num_classes, name=f"{name}_logits")(y)


def build_network(
    genotype,
    num_classes: int,
    image_size: int = 32,
    *,
    structure: str = "cifar",
    init_channels: int = 36,
    layers: int = 20,
    groups: int = 4,
    activations: str = "binary",
    weights: str = "binary",
    search_space: str | None = None,
    stem_multiplier: int = 3,
    drop_path: float = 0.0,
    auxiliary: bool = False,
    scaling: bool = True,
    shortcut: bool = True,
    strict_lce: bool = False,
    deployable: bool = False,
    precision: str = "float32",
    name: str | None = None,
) -> tf.keras.Model:
    """The genotype as a functional model ``images -> logits`` (``[logits, aux]`` with aux).

    # Arguments
        genotype: a :class:`Genotype`, a genotype JSON file, or a built-in name
            (``bats_paper``, ``darts_v2``, ``random:SEED[:SPACE]``).
        num_classes: logits of the classifier.
        image_size: side of the square input images.
        structure: ``cifar`` (one stem, 3x3) or ``imagenet`` (two strided stems).
        init_channels: channels C of the first cells; each reduction cell doubles them.
        layers: cells; the two reduction cells sit at 1/3 and 2/3 of them.
        groups: groups of the binary grouped convolutions.
        activations: ``binary`` or ``real`` inputs of the binary ops (training stage 1: binary).
        weights: ``binary`` or ``real`` kernels of the binary ops (stage 1: real, stage 2:
            binary).
        search_space: overrides the genotype's space (``darts_binary`` builds a binarized
            DARTS cell from a DARTS genotype).
        stem_multiplier: the CIFAR stem has ``stem_multiplier * init_channels`` channels.
        drop_path: probability of dropping a cell's non-identity path in training.
        auxiliary: adds the DARTS auxiliary head after the second reduction (a second output).
        scaling: learned per-channel scale after each binary conv.
        shortcut: identity shortcut around each conv op at stride 1.
        precision: ``float32``, ``bfloat16`` or ``auto`` for the binary convolutions while
            training (the same outputs; a network to deploy is float32).
        strict_lce: raise :class:`LceCompatibilityError` for a binary conv that LCE would not
            binarize (otherwise it is logged).
        deployable: groups of each cell from its width, 32 input channels per group
            (:mod:`bats_tf.widths`), instead of ``groups``; strict about LCE. A genotype
            searched deployable needs it.
        name: the Keras model's name.
    """
    genotype = resolve_genotype(genotype)
    space = get_space(search_space or genotype.search_space)
    genotype.validate(space.primitives)
    if structure not in STRUCTURES:
        raise ConfigError("structure", f"expected one of {', '.join(STRUCTURES)}", structure)
    if genotype.deployable and not deployable:
        raise ConfigError(
            "deployable", "the genotype was searched deployable: build it deployable too", False
        )
    if deployable:
        if space.name != "bats":
            raise ConfigError(
                "deployable", "LCE has no binary depthwise conv: BATS space only", True
            )
        stem_width = stem_multiplier if structure == "cifar" else 1
        concat = min(len(genotype.normal_concat), len(genotype.reduce_concat))
        check_deployable(init_channels, stem_width, concat)
    op_config = ops.OpConfig.for_space(
        space,
        activations,
        weights,
        groups=groups,
        scaling=scaling,
        shortcut=shortcut,
        precision=precision_lib.resolve(precision),
    )
    images = tf.keras.Input((image_size, image_size, 3), name="images")
    if structure == "cifar":
        s0 = s1 = macro.stem(images, stem_multiplier * init_channels)
        reduction_prev = False
    else:
        s0, s1 = imagenet_stems(images, init_channels)
        reduction_prev = True
    aux = None
    plan = widths.cell_plan(layers, init_channels)
    groups_of = widths.cell_groups(layers, init_channels, groups, deployable)
    for i, ((channels, reduction), g) in enumerate(zip(plan, groups_of)):
        cell_config = dataclasses.replace(op_config, groups=g)
        out = cell(
            s0,
            s1,
            genotype,
            channels,
            reduction,
            reduction_prev,
            cell_config,
            drop_path,
            f"cell{i}",
        )
        s0, s1, reduction_prev = s1, out, reduction
        if auxiliary and i == 2 * layers // 3:
            aux = auxiliary_head(s1, num_classes)
    logits = macro.classifier(s1, num_classes)
    outputs = [logits, aux] if aux is not None else logits
    model = tf.keras.Model(images, outputs, name=name or f"bats_{structure}")
    report_lce(model, strict_lce or deployable)
    return model


def inference_model(model: tf.keras.Model) -> tf.keras.Model:
    """The model without its auxiliary head (same layers and weights)."""
    if len(model.outputs) == 1:
        return model
    return tf.keras.Model(model.inputs, model.outputs[0], name=model.name)


def is_binary(quantizer) -> bool:
    """Whether a Larq quantizer binarizes (1 bit)."""
    return getattr(quantizer, "precision", None) == 1


_QUANT_CONVS = (lq.layers.QuantConv2D, lq.layers.QuantDepthwiseConv2D)


def kernel_quantizer(layer):
    if isinstance(layer, lq.layers.QuantDepthwiseConv2D):
        return layer.depthwise_quantizer
    return getattr(layer, "kernel_quantizer", None)


def binary_convs(model) -> list:
    """Convolutions whose inputs and kernels are both binary (LCE's ``LceBconv2d`` candidates)."""
    return [
        layer
        for layer in flat_layers(model)
        if isinstance(layer, _QUANT_CONVS)
        and is_binary(layer.input_quantizer)
        and is_binary(kernel_quantizer(layer))
    ]


def lce_compatibility(model) -> list[dict]:
    """Convs with binary inputs that LCE would not binarize, with the reason.

    Covers fully binary convs and the binary-activation convs of a real-weight stage-1 model
    (binary in stage 2). LCE needs input channels per group to be a multiple of 32 and has no
    binary depthwise conv.
    """
    found = []
    for layer in flat_layers(model):
        if not isinstance(layer, _QUANT_CONVS) or not is_binary(layer.input_quantizer):
            continue
        if isinstance(layer, lq.layers.QuantDepthwiseConv2D):
            found.append(dict(layer=layer.name, reason="binary depthwise"))
            continue
        per_group = int(layer.kernel.shape[2])  # kernel: (k, k, in_channels / groups, out)
        if per_group % LCE_CHANNELS:
            found.append(
                dict(
                    layer=layer.name,
                    groups=layer.groups,
                    per_group=per_group,
                    reason=f"{per_group} input channels per group",
                )
            )
    return found


def report_lce(model, strict: bool = False) -> list[dict]:
    """Logs (or raises, if ``strict``) the binary convs LCE would not binarize."""
    found = lce_compatibility(model)
    if not found:
        return found
    shown = ", ".join(f"{f['layer']} ({f['reason']})" for f in found[:8])
    more = f" and {len(found) - 8} more" if len(found) > 8 else ""
    message = (
        f"{len(found)} binary convs will not become LceBconv2d (LCE needs a multiple of "
        f"{LCE_CHANNELS} input channels per group, no depthwise): {shown}{more}"
    )
    if strict:
        raise LceCompatibilityError(message)
    if message not in _REPORTED:  # once per process, though stages rebuild the network
        _REPORTED.add(message)
        logging.warning(message)
    return found


_REPORTED: set[str] = set()


CUSTOM_OBJECTS = {**ops.CUSTOM_OBJECTS, "DropPath": DropPath}
