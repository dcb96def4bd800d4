"""``model.fit`` that resumes at the batch after its latest checkpoint.

Checkpoints are :class:`~bats_tf.checkpoints.RunCheckpoints` numbered by the optimizer's
step, as a search's are: one mechanism for both. A fit resumed mid-epoch runs that epoch's
remaining batches as a fit of its own, then the later epochs; data order derives from the
epoch, so the batches are those an uninterrupted fit would have seen.
"""

from __future__ import annotations

from collections.abc import Callable

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf

from bats_tf.checkpoints import RunCheckpoints
from bats_tf.errors import Interrupted
from bats_tf.signals import InterruptFlag


class Backup(tf.keras.callbacks.Callback):
    """After SIGINT or SIGTERM, checkpoints the batch that was running (the epoch's end if
    that was its last, saved by :class:`EpochCheckpoint`); then the run stops with
    :class:`~bats_tf.errors.Interrupted`. Place it first.

    # Arguments
        checkpoints: they hold the model's weights and its optimizer (its step included).
        steps: batches per epoch.
    """

    def __init__(self, checkpoints: RunCheckpoints, steps: int):
        super().__init__()
        self.checkpoints, self.steps = checkpoints, steps
        self.flag = None

    def _step(self) -> int:
        return int(self.model.optimizer.iterations.numpy())

    def on_train_begin(self, logs=None):
        self.flag = InterruptFlag()

    def on_epoch_begin(self, epoch, logs=None):
        if self.flag.signum is not None:
            self._stop(f"backup at the end of epoch {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        step = self._step()
        if self.flag.signum is not None and step % self.steps:
            self.checkpoints.save(step)
            epoch, done = divmod(step, self.steps)
            self._stop(f"backup at epoch {epoch + 1}, batch {done}")

    def on_train_end(self, logs=None):
        if self.flag.signum is not None:
            self._stop(f"backup at the end of epoch {self._step() // self.steps}")
        self.flag.restore()

    def _stop(self, where: str):
        signum, self.flag.signum = self.flag.signum, None
        self.flag.restore()
        raise Interrupted(f"{where}; rerun the same command to continue", signum)


class EpochCheckpoint(tf.keras.callbacks.Callback):
    """Checkpoints at every epoch end. Place it last, so what the other callbacks write of an
    epoch (its history) comes before the epoch's checkpoint: a run killed between the two
    redoes the epoch from the checkpoint before and writes its history again, where the other
    order would leave a checkpoint whose epoch is missing from the history for good."""

    def __init__(self, checkpoints: RunCheckpoints):
        super().__init__()
        self.checkpoints = checkpoints

    def on_epoch_end(self, epoch, logs=None):
        self.checkpoints.save(int(self.model.optimizer.iterations.numpy()))


def resume_position(checkpoints: RunCheckpoints, steps: int) -> tuple[int, int]:
    """(epoch, batch) a fit resumes at from ``checkpoints`` ((0, 0) without one)."""
    return divmod(checkpoints.latest_step(), steps)


def resumable_fit(
    model,
    epoch_data: Callable[[int, int], tf.data.Dataset],
    epochs: int,
    steps: int,
    checkpoints: RunCheckpoints,
    callbacks=(),
    **fit_kwargs,
) -> None:
    """Restores ``checkpoints`` and fits ``model`` (compiled) to the end of ``epochs``.

    # Arguments
        model: a compiled Keras model whose optimizer is in ``checkpoints``.
        epoch_data: ``(epoch, skip)`` -> the epoch's training batches from batch ``skip`` on
            (``steps - skip`` of them, or more).
        epochs: epochs of the whole fit.
        steps: batches per epoch.
        checkpoints: what the fit resumes from and backs up to (see :class:`Backup`).
        callbacks: more Keras callbacks, between the backup and the epoch-end checkpoint.
        fit_kwargs: more arguments of ``model.fit`` (validation data, verbosity).
    """
    checkpoints.restore()
    start, skip = resume_position(checkpoints, steps)
    callbacks = [Backup(checkpoints, steps), *callbacks, EpochCheckpoint(checkpoints)]
    if skip and start < epochs:
        model.fit(
            epoch_data(start, skip),
            initial_epoch=start,
            epochs=start + 1,
            steps_per_epoch=steps - skip,
            callbacks=callbacks,
            **fit_kwargs,
        )
        start += 1
    if start < epochs:
        data = epoch_data(start, 0)
        for epoch in range(start + 1, epochs):
            data = data.concatenate(epoch_data(epoch, 0))
        model.fit(
            data,
            initial_epoch=start,
            epochs=epochs,
            steps_per_epoch=steps,
            callbacks=callbacks,
            **fit_kwargs,
        )
