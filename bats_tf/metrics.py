"""Model cost and accuracy: parameters, binary MACs (BOPs), real MACs (FLOPs), top-1/top-5.

MACs are counted from layer shapes, for convolutions and dense layers only (as Larq's
summary does): a conv's MACs are ``out_h * out_w * out_channels * k_h * k_w * in/groups``.
A MAC is binary when both the layer's input and its kernel are binarized (1-bit quantizers);
otherwise it is real. Following the BNN literature (Bi-Real Net, Real-to-Binary, BATS),
``OPs = BOPs / 64 + FLOPs``, where FLOPs counts real MACs.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import larq as lq
import numpy as np
import tensorflow as tf

from bats_tf.losses import distillation_loss
from bats_tf.network import flat_layers, inference_model, is_binary, kernel_quantizer

_CONVS = (tf.keras.layers.Conv2D, tf.keras.layers.DepthwiseConv2D, lq.layers.QuantConv2D)
_DEPTHWISE = (tf.keras.layers.DepthwiseConv2D, lq.layers.QuantDepthwiseConv2D)
_DENSE = (tf.keras.layers.Dense, lq.layers.QuantDense)


def layer_macs(layer) -> tuple[int, bool] | None:
    """(MACs of one forward pass of one example, binary?) of a conv or dense layer, else None."""
    if isinstance(layer, _DEPTHWISE):
        kernel = layer.depthwise_kernel.shape  # (k, k, in, multiplier)
        per_output = int(kernel[0] * kernel[1])
    elif isinstance(layer, _CONVS) or isinstance(layer, _DENSE):
        kernel = layer.kernel.shape  # (k, k, in / groups, out) or (in, out)
        per_output = int(np.prod(kernel[:-1]))
    else:
        return None
    outputs = int(np.prod(layer.output_shape[1:]))
    binary = is_binary(getattr(layer, "input_quantizer", None)) and is_binary(
        kernel_quantizer(layer)
    )
    return outputs * per_output, binary


def complexity(model) -> dict:
    """Parameters (all, binary) and binary / real MACs of one example; ``ops`` as in the paper."""
    bops = flops = binary_params = 0
    for layer in flat_layers(model):
        counted = layer_macs(layer)
        if counted is None:
            continue
        macs, binary = counted
        if binary:
            bops += macs
        else:
            flops += macs
        if is_binary(kernel_quantizer(layer)):
            binary_params += int(np.prod(_kernel(layer).shape))
    params = int(model.count_params())
    return {
        "params": params,
        "binary_params": binary_params,
        "real_params": params - binary_params,
        "bops": int(bops),
        "flops": int(flops),
        "ops": bops / 64 + flops,
    }


def _kernel(layer):
    return layer.depthwise_kernel if isinstance(layer, _DEPTHWISE) else layer.kernel


def evaluate(model, dataset) -> dict:
    """Top-1, top-5 and mean cross-entropy of ``model`` (logits) on batches ``(x, y)``."""
    model = inference_model(model)
    classes = int(model.outputs[0].shape[-1])
    top1 = tf.keras.metrics.SparseCategoricalAccuracy()
    top5 = tf.keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, classes))
    loss = tf.keras.metrics.Mean()

    @tf.function
    def step(x, y):
        logits = model(x, training=False)
        top1.update_state(y, logits)
        top5.update_state(y, logits)
        loss.update_state(distillation_loss(y, logits))

    examples = 0
    for x, y in dataset:
        step(x, y)
        examples += int(tf.shape(y)[0])
    return {
        "top1": float(top1.result()),
        "top5": float(top5.result()),
        "loss": float(loss.result()),
        "examples": examples,
    }
