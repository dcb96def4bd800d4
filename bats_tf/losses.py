"""Losses shared by the search and the retraining: cross-entropy and distillation."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf


def cross_entropy(labels, logits):
    """Per-example cross-entropy of integer labels and logits."""
    return tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def distillation_loss(labels, logits, teacher_logits=None, weight=0.0, temperature=1.0):
    """Per-example ``(1 - weight) * CE + weight * T^2 * KL(teacher_T || student_T)``.

    ``teacher_logits=None`` (or ``weight=0``) gives plain cross-entropy. The ``T^2`` factor
    keeps the gradient scale of the soft term independent of the temperature (Hinton et al.).
    """
    ce = cross_entropy(labels, logits)
    if teacher_logits is None or weight == 0.0:
        return ce
    t = temperature
    p_teacher = tf.nn.softmax(teacher_logits / t)
    log_student = tf.nn.log_softmax(logits / t)
    log_teacher = tf.nn.log_softmax(teacher_logits / t)
    kl = tf.reduce_sum(p_teacher * (log_teacher - log_student), axis=-1)
    return (1.0 - weight) * ce + weight * t * t * kl
