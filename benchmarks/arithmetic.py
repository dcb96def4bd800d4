"""FLOPs of a model's forward pass, counted from layer shapes.

A convolution or dense layer costs 2 FLOPs per multiply-accumulate (a strided dilated
convolution counts at the output's resolution: op layers and fused cells both run it on the
subsampled input), a pooling window 1 FLOP per element it reads; normalisation, activations,
shuffles and the weighted sums are not counted. A weight step (forward, input and weight
gradients) costs about 3x its forward pass; an architecture step asks for no weight gradients,
about 2x; one search step about 5x forward. A training step is 3x forward.
"""

import numpy as np

SEARCH_PASSES = 5  # architecture step (2x forward) + weight step (3x forward)
TRAIN_PASSES = 3


def _fused_flops(layer) -> float:
    """FLOPs of one example through a :class:`~bats_tf.fused.FusedStateEdges` layer."""

    _, h, w, c_in = layer.input_shape[0]
    n_e, s = len(layer.edges), layer.stride
    oh, ow = -(-h // s), -(-w // s)  # every conv runs at the output resolution
    macs = oh * ow * sum(np.prod(k.shape) for k in getattr(layer, "kernels", []))
    if s > 1 and layer.has_skip:
        macs += oh * ow * (np.prod(layer.fr1.shape) + np.prod(layer.fr2.shape))
    pool_window = sum(layer.specs[p].kernel ** 2 for p in layer.pools)
    return 2.0 * macs + pool_window * n_e * oh * ow * c_in


def forward_flops(model) -> float:
    """FLOPs of one example's forward pass, counted from layer shapes (module docstring)."""
    import tensorflow as tf

    from bats_tf.fused import FusedStateEdges
    from bats_tf.network import flat_layers

    pools = (tf.keras.layers.MaxPool2D, tf.keras.layers.AveragePooling2D)
    total = 0.0
    for layer in flat_layers(model):
        if isinstance(layer, FusedStateEdges):
            total += _fused_flops(layer)
        elif isinstance(layer, pools):
            total += np.prod(layer.output_shape[1:]) * np.prod(layer.pool_size)
        elif isinstance(layer, tf.keras.layers.GlobalAveragePooling2D):
            total += np.prod(layer.input_shape[1:])
        else:
            total += 2.0 * _macs(layer)
    return float(total)


def _macs(layer) -> int:
    """MACs of one example's pass through a conv or dense layer (0 for any other layer)."""
    import larq as lq
    import tensorflow as tf

    depthwise = (tf.keras.layers.DepthwiseConv2D, lq.layers.QuantDepthwiseConv2D)
    convs = (tf.keras.layers.Conv2D, lq.layers.QuantConv2D, tf.keras.layers.Dense)
    if isinstance(layer, depthwise):
        per_output = int(np.prod(layer.depthwise_kernel.shape[:2]))  # (k, k, in, multiplier)
    elif isinstance(layer, convs + (lq.layers.QuantDense,)):
        per_output = int(np.prod(layer.kernel.shape[:-1]))  # (k, k, in / groups, out)
    else:
        return 0
    return int(np.prod(layer.output_shape[1:])) * per_output
