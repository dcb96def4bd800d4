"""Model cost and accuracy: parameters, binary MACs (BOPs), real MACs (FLOPs), top-1/top-5.

MACs are Larq's (``lq.models.ModelProfile``: convolutions and dense layers; a conv's MACs
are ``out_h * out_w * out_channels * k_h * k_w * in/groups``; a dilated conv at stride 2 runs
on its subsampled input, :func:`bats_tf.ops.strided_conv`, so it counts at the output
resolution). A MAC is binary when both the layer's input and its kernel are binarized (1-bit
quantizers); otherwise it is real.
Following the BNN literature (Bi-Real Net, Real-to-Binary, BATS), ``OPs = BOPs / 64 +
FLOPs``, where FLOPs counts real MACs.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import larq as lq
import tensorflow as tf

from bats_tf.losses import cross_entropy
from bats_tf.network import inference_model


def complexity(model) -> dict:
    """Parameters (all, binary) and binary / real MACs of one example; ``ops`` as in the paper.

    Counted by Larq's ``ModelProfile``: a MAC is binary when its layer's input and kernel are
    both 1-bit.
    """
    profile = lq.models.ModelProfile(model)
    bops = profile.op_count("mac", 1)
    flops = profile.op_count("mac") - bops
    binary_params = profile.weight_count(bitwidth=1)
    params = int(model.count_params())
    return {
        "params": params,
        "binary_params": int(binary_params),
        "real_params": params - int(binary_params),
        "bops": int(bops),
        "flops": int(flops),
        "ops": bops / 64 + flops,
    }


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
        loss.update_state(cross_entropy(y, logits))

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
