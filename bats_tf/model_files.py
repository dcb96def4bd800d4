"""Saved models: ``.keras`` files of this package's layers, loaded, saved atomically, and
loaded as a frozen teacher; the class names a model was trained on (``classes.json`` beside
it), so data is matched to a model by class name, never by position."""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import os
import tempfile

import tensorflow as tf
from absl import logging

from bats_tf import class_names, io_utils, network
from bats_tf.class_names import CLASSES_FILE
from bats_tf.errors import ConfigError, UsageError


def load_model(path: str) -> tf.keras.Model:
    """A saved ``.keras`` model of this package (custom layers registered)."""
    if not io_utils.exists(path):
        raise ValueError(f"{path}: no such model file")
    if io_utils.isdir(path):
        raise ValueError(f"{path}: a folder, not a .keras model file")
    try:
        return tf.keras.models.load_model(
            path, custom_objects=network.CUSTOM_OBJECTS, compile=False
        )
    except (OSError, ValueError, TypeError, ImportError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not a loadable Keras model ({reason})") from None


def save_model(model, path: str, classes=None) -> None:
    """Saves a ``.keras`` file atomically (temporary file, then rename; a remote path through
    a local temporary file). ``classes`` (the class names) go to ``classes.json`` beside it,
    first, so a model is never without them."""
    if classes is not None:
        class_names.write(os.path.dirname(path), classes)
    if io_utils.is_remote(path):
        with tempfile.TemporaryDirectory() as local:
            model.save(os.path.join(local, "model.keras"))
            io_utils.makedirs(os.path.dirname(path))
            io_utils.copy(os.path.join(local, "model.keras"), path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f"{io_utils.TEMPORARY_PREFIX}{os.getpid()}.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except Exception as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        failure = io_utils.write_failure(e, path)
        if failure is None:
            raise
        raise failure from None


def model_class_names(model_path: str) -> tuple[str, ...] | None:
    """The class names of a saved model (from ``classes.json`` beside it; None if absent)."""
    return class_names.names(os.path.dirname(model_path))


def class_names_or_assumed(model_path: str, outputs: int, data_names, what: str):
    """The class names of a saved model; a model without recorded names (saved outside
    bats-tf) is taken to be trained on ``data_names`` when their count fits, with a warning."""
    names = model_class_names(model_path)
    if names is not None:
        if len(names) != outputs:
            raise UsageError(
                f"{what}={model_path}: gives {outputs} classes but "
                f"{os.path.join(os.path.dirname(model_path), CLASSES_FILE)} names {len(names)}"
            )
        return names
    if outputs != len(data_names):
        raise UsageError(
            f"{what}={model_path}: gives {outputs} classes; the data has {len(data_names)}"
        )
    logging.warning(
        "%s=%s has no class names recorded (%s beside it); assuming the data's %d classes in "
        "their order",
        what,
        model_path,
        CLASSES_FILE,
        len(data_names),
    )
    return tuple(data_names)


def load_teacher(path: str, info) -> tf.keras.Model:
    """A saved model's logits (without an auxiliary head), frozen; it must take the images
    of ``info`` (a ``data.DatasetInfo``) and give its classes, by name when the teacher's are
    recorded."""
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
    names = model_class_names(path)
    if names is not None and names != tuple(info.class_names):
        raise ConfigError("teacher", class_names.difference(names, info.class_names), path)
    model.trainable = False
    return model
