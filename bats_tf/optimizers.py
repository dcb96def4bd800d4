"""Optimizers and learning-rate schedules of the final network's training.

Latent weights of binary kernels (clipped by Larq's ``WeightClip``) get no weight decay, in
the search as in training: decay would pull them towards 0, where their sign flips.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import larq as lq
import tensorflow as tf

from bats_tf.errors import ConfigError
from bats_tf.train_config import LR_SCHEDULES, OPTIMIZERS, TrainConfig


def is_latent_binary(variable) -> bool:
    """Whether ``variable`` holds the latent weights of a binary kernel."""
    return isinstance(getattr(variable, "constraint", None), lq.constraints.WeightClip)


def latent_binary_kernels(model) -> list:
    """The latent weights of ``model``'s binary kernels."""
    return [v for v in model.trainable_variables if is_latent_binary(v)]


def make_schedule(name: str, lr: float, total_steps: int):
    """A learning-rate schedule over ``total_steps``: cosine to 0, step (x0.1 at 50%, 75%)."""
    if name == "cosine":
        return tf.keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1))
    if name == "step":
        bounds = [max(int(total_steps * f), 1) for f in (0.5, 0.75)]
        return tf.keras.optimizers.schedules.PiecewiseConstantDecay(
            [bounds[0], max(bounds[1], bounds[0] + 1)], [lr, lr * 0.1, lr * 0.01]
        )
    if name == "constant":
        return lr
    raise ConfigError("schedule", f"expected one of {', '.join(LR_SCHEDULES)}", name)


def make_optimizer(config: TrainConfig, total_steps: int, model):
    """Adam or SGD with the schedule; decoupled weight decay on all but latent binary kernels.

    The optimizer is built for ``model``'s trainable variables, so a checkpoint restores its
    slots before the first step.
    """
    lr = make_schedule(config.schedule, config.lr, total_steps)
    kw = dict(
        weight_decay=config.weight_decay or None,
        global_clipnorm=config.grad_clip or None,
    )
    if config.optimizer == "adam":
        opt = tf.keras.optimizers.Adam(lr, **kw)
    elif config.optimizer == "sgd":
        opt = tf.keras.optimizers.SGD(lr, momentum=config.momentum, **kw)
    else:
        raise ConfigError("optimizer", f"expected one of {OPTIMIZERS}", config.optimizer)
    if config.weight_decay:
        opt.exclude_from_weight_decay(var_list=latent_binary_kernels(model))
    opt.build(model.trainable_variables)
    return opt
