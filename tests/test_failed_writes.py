"""Writes that fail (no space left, read-only file system) end in one WriteFailed naming the
path and the errno, and keep what was written before: model files, weight files, HDF5's."""

import bats_tf  # noqa: F401

# isort: split
import collections
import errno
import os

import numpy as np
import pytest
import tensorflow as tf

from bats_tf import io_utils, model_files, training
from bats_tf.errors import WriteFailed


def _model():
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
    model.compile("sgd", "mse")
    return model


def _fit(model, callbacks):
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32)
    model.fit(x, y, epochs=1, verbose=0, callbacks=callbacks)


def test_a_weights_file_needs_room_and_keeps_the_last_one(tmp_path, monkeypatch):
    path = str(tmp_path / "checkpoints" / "last.weights.h5")
    model = _model()
    _fit(model, [training.WeightsFile(path, save_weights_only=True)])
    before = open(path, "rb").read()
    assert os.listdir(tmp_path / "checkpoints") == ["last.weights.h5"]
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(training.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 1000))
    model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
    with pytest.raises(WriteFailed) as e:
        _fit(model, [training.WeightsFile(path, save_weights_only=True)])
    assert str(e.value).startswith(f"{path}: No space left on device (ENOSPC); the last ")
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path / "checkpoints") == ["last.weights.h5"]


def test_hdf5_write_errors_are_named_by_path_and_errno():
    error = RuntimeError(
        "Can't decrement id ref count (file write failed: time = Fri Dec  4 14:54:52 2026\n"
        ", filename = '/run/stage1/checkpoints/best.weights.h5', file descriptor = 7, "
        "errno = 28, error message = 'No space left on device', buf = 0x55d0e0f1e6c8)"
    )
    failure = io_utils.write_failure(error)
    assert (failure.path, failure.errno_name) == (
        "/run/stage1/checkpoints/best.weights.h5",
        "ENOSPC",
    )


def test_a_model_that_cannot_be_saved_leaves_the_old_one(tmp_path, monkeypatch):
    path = str(tmp_path / "model.keras")
    model = _model()
    model_files.save_model(model, path, classes=["a", "b", "c"])
    before = open(path, "rb").read()

    def full(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filepath)

    monkeypatch.setattr(tf.keras.Model, "save", full)
    with pytest.raises(WriteFailed) as e:
        model_files.save_model(model, path)
    assert str(e.value).startswith(f"{path}: No space left on device (ENOSPC)")
    assert open(path, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["classes.json", "model.keras"]
    assert model_files.model_class_names(path) == ("a", "b", "c")
