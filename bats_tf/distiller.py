"""Knowledge distillation as a Keras model: a student trained towards a teacher's outputs."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf

from bats_tf import network
from bats_tf.losses import cross_entropy, distillation_loss


class Distiller(tf.keras.Model):
    """Trains ``student`` on ``(1 - w) * CE + w * T^2 * KL(teacher_T || student_T)``.

    Without a teacher (or with ``kd_weight=0``) the loss is plain cross-entropy. A student
    with an auxiliary head (outputs ``[logits, aux]``) adds ``aux_weight * CE(aux)``.
    Validation reports cross-entropy. Metrics: loss, top1, top5.
    """

    def __init__(
        self, student, teacher=None, kd_weight=0.0, temperature=1.0, aux_weight=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
        if teacher is not None:
            teacher.trainable = False
        self.kd_weight, self.temperature, self.aux_weight = kd_weight, temperature, aux_weight
        classes = int(network.inference_model(student).outputs[0].shape[-1])
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.top1 = tf.keras.metrics.SparseCategoricalAccuracy(name="top1")
        self.top5 = tf.keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, classes), name="top5")

    @property
    def metrics(self):
        return [self.loss_tracker, self.top1, self.top5]

    def get_config(self):
        return dict(
            kd_weight=self.kd_weight, temperature=self.temperature, aux_weight=self.aux_weight
        )

    def _outputs(self, x, training):
        out = self.student(x, training=training)
        return (out[0], out[1]) if isinstance(out, (list, tuple)) else (out, None)

    def call(self, x, training=False):
        return self._outputs(x, training)[0]

    def per_example_loss(self, x, y, training=True):
        logits, aux = self._outputs(x, training)
        teacher_logits = None
        if self.teacher is not None and self.kd_weight > 0:
            teacher_logits = self.teacher(x, training=False)
        loss = distillation_loss(y, logits, teacher_logits, self.kd_weight, self.temperature)
        if aux is not None and self.aux_weight > 0:
            loss += self.aux_weight * cross_entropy(y, aux)
        return logits, loss

    def train_step(self, batch):
        x, y = batch
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            logits, per_example = self.per_example_loss(x, y, training=True)
            loss = tf.nn.compute_average_loss(per_example)
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update(y, logits, per_example)

    def test_step(self, batch):
        x, y = batch
        logits = self(x, training=False)
        return self._update(y, logits, cross_entropy(y, logits))

    def _update(self, y, logits, per_example):
        self.loss_tracker.update_state(per_example)
        self.top1.update_state(y, logits)
        self.top5.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}
