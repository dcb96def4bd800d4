"""Saved models: ``.keras`` files of this package's layers, loaded, saved atomically, and
loaded as a frozen teacher."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import os
import tempfile

import tensorflow as tf

from bats_tf import io_utils, network
from bats_tf.errors import ConfigError


def load_model(path: str) -> tf.keras.Model:
    """A saved ``.keras`` model of this package (custom layers registered)."""
    if not io_utils.exists(path):
        raise ValueError(f"{path}: no such model file")
    try:
        return tf.keras.models.load_model(
            path, custom_objects=network.CUSTOM_OBJECTS, compile=False
        )
    except (OSError, ValueError, TypeError, ImportError) as e:
        raise ValueError(f"{path}: not a loadable Keras model ({e})") from None


def save_model(model, path: str) -> None:
    """Saves a ``.keras`` file atomically (temporary file, then rename; a remote path through
    a local temporary file)."""
    if io_utils.is_remote(path):
        with tempfile.TemporaryDirectory() as local:
            model.save(os.path.join(local, "model.keras"))
            io_utils.makedirs(os.path.dirname(path))
            io_utils.copy(os.path.join(local, "model.keras"), path)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".tmp-{os.getpid()}.keras")
    model.save(tmp)
    os.replace(tmp, path)


def load_teacher(path: str, info) -> tf.keras.Model:
    """A saved model's logits (without an auxiliary head), frozen; it must take the images
    of ``info`` (a ``data.DatasetInfo``) and give ``info.num_classes`` classes."""
    try:
        model = network.inference_model(load_model(path))
    except ValueError as e:
        raise ConfigError("teacher", str(e).removeprefix(f"{path}: "), path) from None
    classes, size = model.output_shape[-1], model.input_shape[1]
    if classes != info.num_classes or size != info.image_size:
        raise ConfigError(
            "teacher",
            f"maps {size}px images to {classes} classes; the data has {info.image_size}px "
            f"images and {info.num_classes} classes",
            path,
        )
    model.trainable = False
    return model
