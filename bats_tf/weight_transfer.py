"""Carrying trained weights from one network to another of the same genotype, by layer name
(stage 1 -> stage 2, a training network -> its deployable form)."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import numpy as np

from bats_tf import network


def copy_weights(source, target) -> None:
    """Copies weights layer by layer, matched by name, then :func:`fold_kernel_scale`."""
    by_name = {layer.name: layer for layer in network.flat_layers(source)}
    for layer in network.flat_layers(target):
        if not layer.weights:
            continue
        if layer.name not in by_name:
            raise ValueError(f"layer {layer.name} of {target.name} is not in {source.name}")
        layer.set_weights(by_name[layer.name].get_weights())
    fold_kernel_scale(source, target)


def fold_kernel_scale(source, target) -> None:
    """Keeps a real -> binary kernel's output scale: ``w ~ mean|w| * sign(w)`` (XNOR-Net).

    For each conv whose kernel is real in ``source`` and binary in ``target`` and that is
    followed by a :class:`~bats_tf.ops.ChannelScale` (``<op>_conv`` -> ``<op>_scale``), the
    per-output-channel ``mean|w|`` is multiplied into that scale.
    """
    src = {layer.name: layer for layer in network.flat_layers(source)}
    tgt = {layer.name: layer for layer in network.flat_layers(target)}
    for name, layer in tgt.items():
        scale = tgt.get(name[: -len("_conv")] + "_scale") if name.endswith("_conv") else None
        if scale is None or not network.is_binary(network.kernel_quantizer(layer)):
            continue
        if network.is_binary(network.kernel_quantizer(src[name])):
            continue
        kernel = src[name].kernel.numpy()
        alpha = np.abs(kernel).mean(axis=tuple(range(kernel.ndim - 1)))
        scale.scale.assign(scale.scale * alpha)
