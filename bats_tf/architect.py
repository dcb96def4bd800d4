"""The architecture side of a search: the alphas, their optimizer, their steps, the genotype.

First order: the alphas follow the gradient of the architecture batch's loss at the current
weights. Second order (DARTS eq. 7): the gradient at the virtual weights
``w - lr * dL_train/dw``, with the Hessian-vector product as a central finite difference
(DARTS eq. 8). The virtual step leaves out momentum, as a plain SGD step.

A cost term (:mod:`bats_tf.cost`) adds ``cost_weight * E[cost] / E_uniform[cost]`` to the
architecture loss: its gradient joins the alphas' gradient in every step, whatever the order.
"""

from __future__ import annotations

from collections.abc import Callable

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf

from bats_tf import supernet
from bats_tf.cost import CostTable
from bats_tf.genotype import Genotype, derive

# (images, labels) -> (loss, correct, weight gradients, alpha gradients), on one replica.
GradsFn = Callable[[tf.Tensor, tf.Tensor], tuple]


class Architect:
    """Moves the alphas of ``arch`` with ``optimizer``.

    # Arguments
        arch: the supernet's alphas and temperature.
        optimizer: the alphas' optimizer (Adam in DARTS and BATS), built for them.
        weight_decay: L2 on the alphas, added to their gradient.
        grads_fn: the supernet's loss and gradients on a batch (see ``GradsFn``).
        sum_replicas: sums gradients over the replicas of a step (identity on one device).
        cost: the ops' :class:`~bats_tf.cost.CostTable` (logged; in the loss with a weight).
        cost_weight: weight of the expected cost, relative to its value at uniform alphas.
        max_parameter_free: cap on the pools and skips of each derived cell (None: none).
        deployable: recorded in the derived genotypes.
    """

    def __init__(
        self,
        arch: supernet.Architecture,
        optimizer,
        weight_decay: float,
        grads_fn: GradsFn,
        sum_replicas: Callable[[list], list],
        cost: CostTable | None = None,
        cost_weight: float = 0.0,
        max_parameter_free: int | None = None,
        deployable: bool = False,
    ):
        self.arch, self.optimizer, self.weight_decay = arch, optimizer, weight_decay
        self.grads_fn, self.sum_replicas = grads_fn, sum_replicas
        self.cost, self.cost_weight = cost, cost_weight
        self.max_parameter_free, self.deployable = max_parameter_free, deployable

    def cost_term(self):
        """``cost_weight * E[cost] / E_uniform[cost]`` of the current alphas (a tensor)."""
        expected = self.cost.expected(*self.arch.mixing_weights())
        return self.cost_weight * expected / max(self.cost.uniform, 1e-12)

    def apply(self, grads) -> None:
        """One optimizer step of the alphas along ``grads`` (plus their weight decay)."""
        alphas = self.arch.alphas
        grads = [g + self.weight_decay * a for g, a in zip(grads, alphas)]
        if self.cost is not None and self.cost_weight > 0:
            with tf.GradientTape() as tape:
                term = self.cost_term()
            grads = [g + c for g, c in zip(grads, tape.gradient(term, alphas))]
        self.optimizer.apply_gradients(zip(grads, alphas), skip_gradients_aggregation=True)

    def step(self, images, labels):
        """First-order step on an architecture batch; returns its (loss, correct count)."""
        loss, correct, _, grads = self.grads_fn(images, labels)
        self.apply(self.sum_replicas(grads))
        return loss, correct

    def unrolled_step(self, w_batch, a_batch, w_vars, weight_grads, lr):
        """Second-order step; returns the architecture batch's (loss, correct count).

        # Arguments
            w_batch, a_batch: (images, labels) of the weight and the architecture part.
            w_vars: the supernet's weights (moved and put back).
            weight_grads: (images, labels) -> (gradients, loss, correct) of a weight step.
            lr: the learning rate of the weight step about to run.
        """
        backup = [tf.identity(v) for v in w_vars]
        grads, _, _ = weight_grads(*w_batch)
        for v, g in zip(w_vars, grads):
            v.assign_sub(lr * g)
        loss, correct, d_w, d_alpha = self.grads_fn(*a_batch)
        eps = 0.01 / (tf.linalg.global_norm(d_w) + 1e-12)
        hessian = []
        for sign in (1.0, -1.0):
            for v, b, d in zip(w_vars, backup, d_w):
                v.assign(b + sign * eps * d)
            hessian.append(self.grads_fn(*w_batch)[3])
        for v, b in zip(w_vars, backup):
            v.assign(b)
        grads = [
            da - lr * (hp - hn) / (2.0 * eps) for da, hp, hn in zip(d_alpha, hessian[0], hessian[1])
        ]
        self.apply(grads)
        return loss, correct

    @property
    def temperature(self) -> float:
        return float(self.arch.temperature.numpy())

    def set_temperature(self, progress: float, start: float, final, schedule: str) -> None:
        """The temperature at ``progress`` (0 to 1) of the search."""
        self.arch.temperature.assign(supernet.temperature_at(progress, start, final, schedule))

    def mixing_weights(self) -> list:
        """softmax(alpha / T) of the normal and the reduction cell, as NumPy arrays."""
        return [w.numpy()[0] for w in self.arch.mixing_weights()]

    def genotype(self, space) -> Genotype:
        """The cell the alphas derive now."""
        normal, reduce = self.mixing_weights()
        return derive(normal, reduce, space, self.max_parameter_free, self.deployable)

    def costs(self, genotype: Genotype) -> dict:
        """The expected cost of the alphas and the cost of ``genotype`` (empty: no table)."""
        if self.cost is None:
            return {}
        kind = self.cost.kind
        return {
            f"expected_{kind}": self.cost.expected(*self.mixing_weights()),
            f"genotype_{kind}": self.cost.of_genotype(genotype),
        }

    def record(self, primitives) -> dict:
        """What ``alphas.json`` holds: the primitives, the temperature and both alpha tables."""
        return {
            "primitives": list(primitives),
            "temperature": self.temperature,
            "alpha_normal": self.arch.normal.numpy().tolist(),
            "alpha_reduce": self.arch.reduce.numpy().tolist(),
        }
