"""Tests of bats_tf.data on tiny image folders, a tiny prepared tfds dataset and cifar10_mini."""

import bats_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import filecmp
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from bats_tf import data

CLASSES = ("cat", "dog", "eel")
PER_CLASS = 8
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _save(path, size=32, seed=0):
    rng = np.random.RandomState(seed)
    Image.fromarray(rng.randint(0, 256, (size, size, 3), np.uint8)).save(path)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """root/train/<class>/ with PNG and JPEG images (some upper-case), plus noise to ignore."""
    root = tmp_path_factory.mktemp("folder")
    for c, name in enumerate(CLASSES):
        os.makedirs(root / "train" / name)
        for i in range(PER_CLASS):
            ext = (".png", ".jpg", ".JPEG")[i % 3]
            _save(root / "train" / name / f"{i:02d}{ext}", seed=100 * c + i)
        (root / "train" / name / "notes.txt").write_text("not an image")
    os.makedirs(root / "train" / ".hidden")
    return str(root)


def _keys(ds):
    """Each example's image bytes (decoding is deterministic, so these identify examples)."""
    return [image.numpy().tobytes() for image, _ in ds]


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_load_folder(folder):
    ds, info = data.load("folder", "train", folder)
    assert info == data.DatasetInfo("folder", 3, 32, 3 * PER_CLASS, CLASSES)
    examples = list(ds)
    assert [int(y) for _, y in examples] == [c for c in range(3) for _ in range(PER_CLASS)]
    image, label = examples[0]
    assert image.shape == (32, 32, 3) and image.dtype == tf.uint8 and label.dtype == tf.int64
    png = np.asarray(Image.open(os.path.join(folder, "train", "cat", "00.png")))
    np.testing.assert_array_equal(image.numpy(), png)
    assert _keys(ds) == _keys(data.load("folder", "train", folder)[0])  # fixed order


def test_load_large_images_and_resize(tmp_path):
    for i, (h, w) in enumerate([(90, 120), (130, 100)]):
        os.makedirs(tmp_path / "val" / f"c{i}")
        Image.new("RGB", (w, h), (10 * i, 20, 30)).save(tmp_path / "val" / f"c{i}" / "a.jpg")
    ds, info = data.load("folder", "val", str(tmp_path))
    assert (info.image_size, info.num_classes) == (224, 2)
    assert [tuple(x.shape) for x, _ in ds] == [(90, 120, 3), (130, 100, 3)]
    for training in (True, False):
        x, y = next(iter(data.pipeline(ds, info, 2, training)))
        assert x.shape == (2, 224, 224, 3) and x.dtype == tf.float32 and y.dtype == tf.int64


def test_search_splits_disjoint_and_seeded(folder):
    full = _keys(data.load("folder", "train", folder)[0])
    weights, arch, info = data.search_splits("folder", folder, seed=1)
    a, b = _keys(weights), _keys(arch)
    assert info.num_examples == len(full) and len(a) == len(b) == len(full) // 2
    assert not set(a) & set(b) and set(a) | set(b) == set(full)
    position = {key: i for i, key in enumerate(full)}
    assert [position[k] for k in a] == sorted(position[k] for k in a)  # split's order kept
    again, _, _ = data.search_splits("folder", folder, seed=1)
    other, _, _ = data.search_splits("folder", folder, seed=2)
    assert _keys(again) == a and _keys(other) != a


def test_max_examples_and_holdout(folder):
    full = set(_keys(data.load("folder", "train", folder)[0]))
    a, b, _ = data.search_splits("folder", folder, train_portion=0.3, max_examples=10)
    assert (len(_keys(a)), len(_keys(b))) == (3, 7)
    assert set(_keys(a)) | set(_keys(b)) < full
    train, val, info = data.holdout_split("folder", folder, holdout=0.25)
    train, val = _keys(train), _keys(val)
    assert (len(train), len(val), info.num_examples) == (18, 6, 24)
    assert not set(train) & set(val)


def test_pipeline_eval_normalises(folder):
    ds, info = data.load("folder", "train", folder)
    batches = _batches(data.pipeline(ds, info, 10, training=False))
    assert [x.shape for x, _ in batches] == [(10, 32, 32, 3)] * 2 + [(4, 32, 32, 3)]
    assert all(x.dtype == np.float32 and y.dtype == np.int64 for x, y in batches)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    raw = np.stack([x.numpy() for x, _ in ds.take(10)])
    np.testing.assert_allclose(batches[0][0], (raw / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_pipeline_training_is_repeatable(folder):
    ds, info = data.load("folder", "train", folder)

    def epoch(e, seed=0, **kw):
        return _batches(data.pipeline(ds, info, 10, training=True, seed=seed, epoch=e, **kw))

    first = epoch(0)
    assert [x.shape for x, _ in first] == [(10, 32, 32, 3)] * 2  # drop_remainder
    for (x, y), (x2, y2) in zip(first, epoch(0), strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(first[0][1], epoch(1)[0][1])  # another order
    assert not np.array_equal(first[0][0], epoch(0, seed=5)[0][0])
    assert len(epoch(0, drop_remainder=False)) == 3
    plain = _batches(data.pipeline(ds, info, 24, training=False))[0][0]
    augmented = np.concatenate([x for x, _ in first])
    assert not {a.tobytes() for a in augmented} <= {p.tobytes() for p in plain}


def test_skip_batches_resumes_mid_epoch(folder):
    ds, info = data.load("folder", "train", folder)
    full = _batches(data.pipeline(ds, info, 4, training=True, epoch=3))
    resumed = _batches(data.pipeline(ds, info, 4, training=True, epoch=3, skip_batches=2))
    assert len(resumed) == len(full) - 2
    for (x, y), (x2, y2) in zip(full[2:], resumed, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_pipeline_decodes_once(folder):
    ds, info = data.load("folder", "train", folder)
    calls = []

    def count(image):
        calls.append(1)
        return image

    counted = ds.map(
        lambda x, y: (tf.ensure_shape(tf.numpy_function(count, [x], tf.uint8), x.shape), y)
    )
    for e in range(3):
        list(data.pipeline(counted, info, 8, training=True, epoch=e))
    assert len(calls) == info.num_examples


def _error(match, call):
    with pytest.raises(data.DataError, match=match):
        call()


def test_folder_errors(folder, tmp_path):
    root = str(tmp_path)
    _error("--data_dir=.*no such directory", lambda: data.load("folder", "train", root + "/no"))
    _error("--data_dir: required", lambda: data.load("folder", "train"))
    _error(
        r"no split folder 'test' \(splits found: train\)",
        lambda: data.load("folder", "test", folder),
    )
    _error("--dataset=mnist: unknown", lambda: data.load("mnist", "train", folder))
    os.makedirs(tmp_path / "train")
    _error("train: no class folders", lambda: data.load("folder", "train", root))
    os.makedirs(tmp_path / "train" / "a")
    _save(tmp_path / "train" / "a" / "0.png")
    os.makedirs(tmp_path / "train" / "b")
    _error("train/b: no images", lambda: data.load("folder", "train", root))
    _save(tmp_path / "train" / "b" / "0.png")
    (tmp_path / "train" / "a" / "0.png").write_bytes(b"not a png")  # the first image is checked
    _error("a/0.png: not a readable image", lambda: data.load("folder", "train", root))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(train_portion=0.0), "--train_portion=0.0: must be in"),
        (dict(train_portion=1.5), "--train_portion=1.5: must be in"),
        (dict(train_portion=0.01), "--train_portion=0.01: leaves an empty part"),  # 0.24 examples
        (dict(max_examples=0), "--max_examples=0: must be in"),
        (dict(max_examples=25), "--max_examples=25: must be in \\[1, 24\\]"),
    ],
)
def test_split_errors(folder, kwargs, match):
    _error(match, lambda: data.search_splits("folder", folder, **kwargs))


def test_holdout_error(folder):
    _error("--holdout=1.0: must be in", lambda: data.holdout_split("folder", folder, holdout=1.0))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet2012"])
def test_tfds_without_prepared_data_fails_fast(tmp_path, name):
    start = time.time()
    _error(
        f"--dataset={name}: no prepared tfds data .*use --dataset=folder",
        lambda: data.search_splits(name, str(tmp_path)),
    )
    assert time.time() - start < 5


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """A tiny cifar10 (20 train, 6 test examples) written in the tfds format."""
    root = tmp_path_factory.mktemp("tfds")
    folder = root / "cifar10" / "3.0.2"
    os.makedirs(folder)
    names = [f"class{i}" for i in range(10)]
    features = tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(),
            "image": tfds.features.Image(shape=(32, 32, 3)),
            "label": tfds.features.ClassLabel(names=names),
        }
    )
    rng = np.random.RandomState(0)
    for split, n in (("train", 20), ("test", 6)):
        with tf.io.TFRecordWriter(str(folder / f"cifar10-{split}.tfrecord-00000-of-00001")) as w:
            for i in range(n):
                image = rng.randint(0, 256, (32, 32, 3), np.uint8)
                w.write(features.serialize_example({"id": str(i), "image": image, "label": i % 10}))
    tfds.folder_dataset.write_metadata(data_dir=str(folder), features=features)
    return str(root)


def test_tfds_load_and_split(tfds_dir):
    ds, info = data.load("cifar10", "train", tfds_dir)
    assert info == data.DatasetInfo("cifar10", 10, 32, 20, tuple(f"class{i}" for i in range(10)))
    full = _keys(ds)
    assert [int(y) for _, y in ds] == [i % 10 for i in range(20)]
    a, b, _ = data.search_splits("cifar10", tfds_dir, max_examples=16, seed=3)
    order = np.random.RandomState(3).permutation(20)[:16]
    assert _keys(a) == [full[i] for i in sorted(order[:8])]
    assert _keys(b) == [full[i] for i in sorted(order[8:])]
    assert int(a.cardinality()) == 8
    x, y = next(iter(data.pipeline(a, info, 4, training=True)))
    assert x.shape == (4, 32, 32, 3) and y.shape == (4,)
    _error(
        r"--split=validation: not a split of cifar10 \(splits: test, train\)",
        lambda: data.load("cifar10", "validation", tfds_dir),
    )


def test_cifar10_mini():
    names = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
    files = {}
    for split, n in (("train", 3000), ("test", 600)):
        ds, info = data.load("cifar10_mini", split)
        assert info == data.DatasetInfo("cifar10_mini", 10, 32, n, names)
        labels = np.array([int(y) for y in ds.map(lambda x, y: y)])
        assert np.bincount(labels).tolist() == [n // 10] * 10
        folder = os.path.join(data.MINI_DIR, split)
        files[split] = {(c, f) for c in names for f in os.listdir(os.path.join(folder, c))}
    assert not files["train"] & files["test"]
    x, y = next(iter(data.pipeline(ds, info, 16, training=False)))
    assert x.shape == (16, 32, 32, 3) and abs(float(tf.reduce_mean(x))) < 1.0


def test_make_mini_dataset_script(tmp_path):
    source = tmp_path / "source"
    for c in ("a", "b"):
        os.makedirs(source / c)
        for i in range(6):
            _save(source / c / f"{i}.jpg", seed=i)
    script = os.path.join(ROOT, "scripts", "make_mini_dataset.py")
    args = [
        sys.executable,
        script,
        f"--source={source}",
        f"--output={tmp_path / 'out'}",
        "--train_per_class=3",
        "--test_per_class=2",
        "--seed=1",
    ]
    subprocess.run(args, check=True, capture_output=True)
    for c in ("a", "b"):
        train, test = (sorted(os.listdir(tmp_path / "out" / s / c)) for s in ("train", "test"))
        assert (len(train), len(test)) == (3, 2) and not set(train) & set(test)
        assert all(
            filecmp.cmp(source / c / f, tmp_path / "out" / "train" / c / f, shallow=False)
            for f in train
        )
    assert "Krizhevsky" in (tmp_path / "out" / "README.md").read_text()
    again = subprocess.run(args, capture_output=True, text=True)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
