"""A run's checkpoints, numbered by global step: what a search or a training stage needs
to continue, saved and found again. Search and training resume through this one class.

The chief checkpoints into ``<folder>/<name>``, another worker of a cluster into
``<folder>/workers/<task>/<name>``; every worker resumes from the chief's when it can read
them (a shared file system), else from its own.
"""

from __future__ import annotations

import os

import bats_tf  # noqa: F401

# isort: split
import tensorflow as tf

from bats_tf import io_utils
from bats_tf.errors import RunError, WriteFailed


class RunCheckpoints:
    """The checkpoints of ``objects`` (a ``tf.train.Checkpoint``'s keyword arguments).

    # Arguments
        objects: what a checkpoint holds (for a search: model, alphas, optimizers, step,
            running sums; for a training stage: the network and its optimizer).
        folder: the run's (or stage's) folder.
        name: the checkpoint folder's name in it.
        task: this worker's "type:index", or None for the chief.
        keep: checkpoints kept.
    """

    def __init__(
        self,
        objects: dict,
        folder: str,
        name: str = "checkpoints",
        task: str | None = None,
        keep: int = 2,
    ):
        self.checkpoint = tf.train.Checkpoint(**objects)
        self.chief_directory = os.path.join(folder, name)
        own = os.path.join("workers", task.replace(":", "_")) if task else ""
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, os.path.join(folder, own, name), max_to_keep=keep
        )
        self.chief = task is None

    @property
    def directory(self) -> str:
        """This worker's checkpoint folder."""
        return self.manager.directory

    def latest(self) -> str | None:
        """The newest committed checkpoint: the chief's if readable, else this worker's own."""
        latest = None if self.chief else tf.train.latest_checkpoint(self.chief_directory)
        latest = latest or self.manager.latest_checkpoint
        listing = os.path.join(self.manager.directory, "checkpoint")
        if latest is None and io_utils.exists(listing):
            raise RunError(
                f"{listing}: unreadable checkpoint list; start fresh with a new output_dir"
            )
        return latest

    def restore(self) -> str | None:
        """Restores the latest checkpoint (None: there is none).

        Files of a checkpoint whose writing was cut short are not listed in
        ``checkpoints/checkpoint`` and are never read (the next save overwrites them).
        """
        latest = self.latest()
        if latest:
            try:
                self.checkpoint.restore(latest).assert_existing_objects_matched()
            except Exception as e:  # a damaged file can fail in many ways
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise RunError(
                    f"{latest}: checkpoint is corrupt or from another configuration ({reason}); "
                    "start fresh with a new output_dir"
                ) from None
        return latest

    def latest_step(self) -> int:
        """The global step of the latest checkpoint (0 without one), read from its name."""
        latest = self.latest()
        return int(latest.rsplit("-", 1)[1]) if latest else 0

    def save(self, step: int) -> None:
        """Checkpoints ``step``, unless that checkpoint exists (never rewrite one)."""
        latest = self.manager.latest_checkpoint
        if latest is None or not latest.endswith(f"-{step}"):
            try:
                self.manager.save(checkpoint_number=step)
            except (OSError, tf.errors.OpError) as e:  # the earlier checkpoints stay listed
                failure = io_utils.write_failure(e)
                if failure is None:
                    raise
                where = os.path.join(self.manager.directory, f"ckpt-{step}")
                raise WriteFailed(where, failure.errno_name, failure.reason) from None

    def remove(self) -> None:
        """Deletes this worker's checkpoint folder (a finished run's)."""
        if io_utils.exists(self.manager.directory):
            tf.io.gfile.rmtree(self.manager.directory)
