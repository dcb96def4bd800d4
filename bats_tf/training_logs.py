"""What a training stage writes as it goes: per-epoch history, learning rate, model summary."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import json
import time

import larq as lq
import tensorflow as tf

from bats_tf import io_utils
from bats_tf.io_utils import atomic_write_json, atomic_write_text


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Adds the learning rate and the epoch's wall time to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        logs["learning_rate"] = float(tf.keras.backend.get_value(lr))  # Keras's own name
        logs["seconds"] = time.time() - self._start


class JsonHistory(tf.keras.callbacks.Callback):
    """Per-epoch logs as a JSON list; on resume, epochs at or after the restart are replaced."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        self.history = read_history(self.path)

    def on_epoch_end(self, epoch, logs=None):
        self.history = [h for h in self.history if h["epoch"] < epoch]
        self.history.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        atomic_write_json(self.path, self.history)


def write_larq_summary(model, path: str, echo: bool = True) -> str:
    """``lq.models.summary`` (bit-widths, memory, binarized MACs) to ``path``, and stdout."""
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    if echo:
        print(text, end="", flush=True)
    return text


def read_history(path: str) -> list[dict]:
    return json.loads(io_utils.read_text(path)) if io_utils.exists(path) else []
