"""Tests of bats_tf.data on tiny image folders, a tiny prepared tfds dataset and cifar10_mini."""

import bats_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import filecmp
import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from bats_tf import data, image_scan
from bats_tf.errors import UsageError

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
    ds, info = data.load_split("folder", "train", folder)
    assert info == data.DatasetInfo("folder", 3, 32, 3 * PER_CLASS, CLASSES)
    examples = list(ds)
    assert [int(y) for _, y in examples] == [c for c in range(3) for _ in range(PER_CLASS)]
    image, label = examples[0]
    assert image.shape == (32, 32, 3) and image.dtype == tf.uint8 and label.dtype == tf.int64
    png = np.asarray(Image.open(os.path.join(folder, "train", "cat", "00.png")))
    np.testing.assert_array_equal(image.numpy(), png)
    assert _keys(ds) == _keys(data.load_split("folder", "train", folder)[0])  # fixed order


def test_large_images_stay_encoded_until_the_pipeline_crops_them(tmp_path):
    rng = np.random.RandomState(0)
    for i, (h, w, ext) in enumerate([(90, 120, "jpg"), (130, 100, "png"), (300, 200, "jpg")]):
        os.makedirs(tmp_path / "val" / f"c{i}")
        pixels = rng.randint(0, 256, (h, w, 3)).astype("uint8")
        Image.fromarray(pixels).save(tmp_path / "val" / f"c{i}" / f"a.{ext}")
    ds, info = data.load_split("folder", "val", str(tmp_path))
    assert (info.image_size, info.num_classes) == (224, 3)
    # The source holds the files' bytes (ImageNet as decoded pixels would not fit in memory).
    shapes = [tuple(tf.io.decode_image(x).shape) for x, _ in ds]
    assert [x.dtype for x, _ in ds] == [tf.string] * 3
    assert shapes == [(90, 120, 3), (130, 100, 3), (300, 200, 3)]
    for training in (True, False):
        batches = [data.pipeline(ds, info, 3, training, seed=1) for _ in range(2)]
        (x, y), (x2, _) = (next(iter(b)) for b in batches)
        assert x.shape == (3, 224, 224, 3) and x.dtype == tf.float32 and y.dtype == tf.int64
        np.testing.assert_array_equal(x.numpy(), x2.numpy())  # same seed, same crops
    assert getattr(ds, "_bats_cached", None) is None  # never cached


# The partition of a split by index.

BASE_PARTS = ("search_weights", "search_arch", "final_train", "val")
# The parts of 20 examples, computed once from PARTITION_SEED = 0: any change of the partition
# (seed, order, boundaries) moves images between parts and must show up here.
PARTS_OF_20 = {
    "search_weights": [1, 8, 10, 18, 19],
    "search_arch": [2, 4, 6, 13, 17],
    "final_train": [5, 7, 9, 11, 14, 16],
    "val": [0, 3, 12, 15],
    "train": [1, 2, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 16, 17, 18, 19],
}


@pytest.mark.parametrize("n", [4, 20, 24, 1001, 50_000])
def test_partition_parts_are_disjoint_and_cover_the_split(n):
    parts = {p: data.part_indices(n, p) for p in data.PARTS}
    assert set(data.PARTS) == {*BASE_PARTS, "train"}
    for p, indices in parts.items():
        assert indices.dtype.kind == "i" and list(indices) == sorted(set(indices)), p
    together = np.concatenate([parts[p] for p in BASE_PARTS])
    assert sorted(together) == list(range(n))  # each index in exactly one part
    for i, a in enumerate(BASE_PARTS):
        for b in BASE_PARTS[i + 1 :]:
            assert not set(parts[a]) & set(parts[b]), (a, b)
    first_three = np.concatenate([parts[p] for p in BASE_PARTS[:3]])
    np.testing.assert_array_equal(parts["train"], np.sort(first_three))
    assert not set(parts["train"]) & set(parts["val"])
    sizes = [len(parts[p]) for p in BASE_PARTS]
    assert sizes == [round(n / 4), round(n / 2) - round(n / 4), *sizes[2:]]
    assert len(parts["val"]) == n - int(round(n * 0.8))
    np.testing.assert_array_equal(data.part_indices(n, None), np.arange(n))


def test_partition_is_fixed_and_independent_of_seeds():
    assert data.PARTITION_SEED == 0
    for p, expected in PARTS_OF_20.items():
        assert data.part_indices(20, p).tolist() == expected, p
    # The first indices of each part in permutation order, pinned too.
    assert data.part_indices(20, "search_weights", 2).tolist() == [1, 18]
    assert data.part_indices(20, "val", 1).tolist() == [3]
    assert data.part_indices(20, None, 3).tolist() == [1, 18, 19]
    # No global seed moves it (a run's --seed sets these).
    for seed in (1, 7):
        np.random.seed(seed)
        tf.keras.utils.set_random_seed(seed)
        np.random.rand(3)
        for p, expected in PARTS_OF_20.items():
            assert data.part_indices(20, p).tolist() == expected, (seed, p)


@pytest.mark.parametrize("part", [*data.PARTS, None])
def test_max_examples_is_a_stable_prefix(part):
    n = 101
    whole = data.part_indices(n, part)
    previous = set()
    for m in range(1, len(whole) + 1):
        chosen = data.part_indices(n, part, m)
        assert len(chosen) == m and list(chosen) == sorted(chosen)
        assert previous < set(chosen) <= set(whole)
        previous = set(chosen)
    np.testing.assert_array_equal(data.part_indices(n, part, len(whole)), whole)


def test_partition_through_load_part_and_search_splits(folder):
    """On images: val never meets the search parts; train is everything but val."""
    full = _keys(data.load_split("folder", "train", folder)[0])
    assert len(set(full)) == len(full) == 24  # keys identify the fixture's images
    keys = {p: _keys(data.load_part("folder", "train", folder, p)[0]) for p in data.PARTS}
    weights, arch, info = data.search_splits("folder", folder)
    assert info.num_examples == 24
    assert _keys(weights) == keys["search_weights"] and _keys(arch) == keys["search_arch"]
    assert (len(_keys(weights)), len(_keys(arch))) == (6, 6)
    searched = set(_keys(weights)) | set(_keys(arch))
    assert not searched & set(keys["val"]) and len(keys["val"]) == 5
    assert not set(keys["final_train"]) & (searched | set(keys["val"]))
    assert set(keys["train"]) == searched | set(keys["final_train"]) == set(full) - set(keys["val"])
    for p in data.PARTS:  # the split's order, and the indices part_indices gives
        assert keys[p] == [full[i] for i in data.part_indices(24, p)], p
    assert _keys(data.load_part("folder", "train", folder, None)[0]) == full
    # max_examples: a total split half and half, each a prefix of its part.
    a, b, _ = data.search_splits("folder", folder, max_examples=5)
    a, b = _keys(a), _keys(b)
    assert (len(a), len(b)) == (2, 3)
    assert set(a) < set(keys["search_weights"]) and set(b) < set(keys["search_arch"])
    assert a == _keys(data.load_part("folder", "train", folder, "search_weights", 2)[0])
    again = data.search_splits("folder", folder, max_examples=5)
    assert (_keys(again[0]), _keys(again[1])) == (a, b)  # no run seed involved
    val3 = _keys(data.load_part("folder", "train", folder, "val", 3)[0])
    assert set(val3) < set(keys["val"])
    assert set(_keys(data.load_part("folder", "train", folder, None, 4)[0])) < set(full)


def test_the_parts_known_before_tensorflow_are_those_of_bats_tf_data():
    from bats_tf import datasets, training

    assert data.PARTS is datasets.PARTS and data.DATASETS is datasets.DATASETS
    assert set(training.TRAIN_PARTS) < set(data.PARTS) and "val" not in training.TRAIN_PARTS


def test_pipeline_eval_normalises(folder):
    ds, info = data.load_split("folder", "train", folder)
    batches = _batches(data.pipeline(ds, info, 10, training=False))
    assert [x.shape for x, _ in batches] == [(10, 32, 32, 3)] * 2 + [(4, 32, 32, 3)]
    assert all(x.dtype == np.float32 and y.dtype == np.int64 for x, y in batches)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    raw = np.stack([x.numpy() for x, _ in ds.take(10)])
    np.testing.assert_allclose(batches[0][0], (raw / 255 - mean) / std, rtol=1e-5, atol=1e-5)


def test_pipeline_training_is_repeatable(folder):
    ds, info = data.load_split("folder", "train", folder)

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
    ds, info = data.load_split("folder", "train", folder)
    full = _batches(data.pipeline(ds, info, 4, training=True, epoch=3))
    resumed = _batches(data.pipeline(ds, info, 4, training=True, epoch=3, skip_batches=2))
    assert len(resumed) == len(full) - 2
    for (x, y), (x2, y2) in zip(full[2:], resumed, strict=True):
        np.testing.assert_array_equal(x, x2)
        np.testing.assert_array_equal(y, y2)


def test_pipeline_decodes_once(folder):
    ds, info = data.load_split("folder", "train", folder)
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
    with pytest.raises(UsageError, match=match):  # DataError, or ConfigError for a setting
        call()


def test_folder_errors(folder, tmp_path):
    root = str(tmp_path)
    _error(
        "^data_dir=.*: no such directory$", lambda: data.load_split("folder", "train", root + "/no")
    )
    _error("^data_dir: required with dataset=folder$", lambda: data.load_split("folder", "train"))
    _error(
        r"no split folder 'test' \(splits found: train\)",
        lambda: data.load_split("folder", "test", folder),
    )
    _error("^dataset=mnist: unknown", lambda: data.load_split("mnist", "train", folder))
    os.makedirs(tmp_path / "train")
    _error("train: no class folders", lambda: data.load_split("folder", "train", root))
    os.makedirs(tmp_path / "train" / "a")
    _save(tmp_path / "train" / "a" / "0.png")
    os.makedirs(tmp_path / "train" / "b")
    _error("train/b: no images", lambda: data.load_split("folder", "train", root))
    _save(tmp_path / "train" / "b" / "0.png")
    (tmp_path / "train" / "a" / "0.png").write_bytes(b"not a png")
    _error(
        r"train/a: no readable image \(all 1 are broken; .*a/0.png: not a JPEG or PNG image\)",
        lambda: _with_policy("skip", lambda: data.load_split("folder", "train", root)),
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda f: data.load_part("folder", "train", f, "bogus"),
            r"^part=bogus: unknown part \(choose from search_weights, search_arch, "
            r"final_train, val, train\)$",
        ),
        (
            lambda f: data.load_part("folder", "train", f, "tr", part_param="train_part"),
            "^train_part=tr: unknown part",
        ),
        (
            lambda f: data.load_part("folder", "train", f, "val", 0),
            r"^max_examples=0: must be in \[1, 5\] \(the val part of folder has 5 examples\)$",
        ),
        (
            lambda f: data.load_part(
                "folder", "train", f, "val", 6, examples_param="max_val_examples"
            ),
            r"^max_val_examples=6: must be in \[1, 5\] \(the val part",
        ),
        (
            lambda f: data.load_part("folder", "train", f, None, 25),
            r"^max_examples=25: must be in \[1, 24\] \(folder has 24 examples\)$",
        ),
        (
            lambda f: data.search_splits("folder", f, max_examples=1),
            r"^max_examples=1: must be in \[2, 12\] \(half each",
        ),
        (
            lambda f: data.search_splits("folder", f, max_examples=13),
            r"^max_examples=13: must be in \[2, 12\]",
        ),
        (lambda f: data.part_indices(1, "search_weights"), "the search_weights part of .*empty"),
    ],
)
def test_partition_errors(folder, call, match):
    _error(match, lambda: call(folder))


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet2012"])
def test_tfds_without_prepared_data_fails_fast(tmp_path, name):
    start = time.time()
    _error(
        f"^dataset={name}: no prepared tfds data .*`tfds build {name} "
        f"--data_dir={tmp_path}`.*use dataset=folder with a data_dir",
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
    ds, info = data.load_split("cifar10", "train", tfds_dir)
    assert info == data.DatasetInfo("cifar10", 10, 32, 20, tuple(f"class{i}" for i in range(10)))
    full = _keys(ds)
    assert [int(y) for _, y in ds] == [i % 10 for i in range(20)]
    a, b, _ = data.search_splits("cifar10", tfds_dir, max_examples=8)
    assert _keys(a) == [full[i] for i in (1, 8, 18, 19)]  # see PARTS_OF_20
    assert _keys(b) == [full[i] for i in (4, 6, 13, 17)]
    assert int(a.cardinality()) == 4
    val, _ = data.load_part("cifar10", "train", tfds_dir, "val")
    assert _keys(val) == [full[i] for i in PARTS_OF_20["val"]] and int(val.cardinality()) == 4
    x, y = next(iter(data.pipeline(a, info, 4, training=True)))
    assert x.shape == (4, 32, 32, 3) and y.shape == (4,)
    _error(
        r"^split=validation: not a split of cifar10 \(splits: test, train\)",
        lambda: data.load_split("cifar10", "validation", tfds_dir),
    )


def test_cifar10_mini():
    names = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())
    files = {}
    for split, n in (("train", 3000), ("test", 600)):
        ds, info = data.load_split("cifar10_mini", split)
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


# ------------------------------------------------------------------ broken images, colours


@pytest.fixture(autouse=True)
def scan_cache(tmp_path_factory, monkeypatch):
    """Every test scans with a cache of its own (no result of another test reused)."""
    folder = tmp_path_factory.mktemp("scan_cache")
    monkeypatch.setenv(image_scan.CACHE_ENV, str(folder))
    return folder


def _with_policy(policy, call):
    data.set_bad_images(policy)
    try:
        return call()
    finally:
        data.set_bad_images("skip")
        data._warned.clear()


def _encoded(fmt, pixels=None, size=32, seed=0, **kw):
    if pixels is None:
        pixels = np.random.RandomState(seed).randint(0, 256, (size, size, 3), np.uint8)
    image = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kw)
    return buffer.getvalue()


BROKEN = {  # file name in class "dog": (bytes, the reason named)
    "empty.jpg": (lambda: b"", "empty file"),
    "text.jpg": (lambda: b"a text file named like a JPEG", "not a JPEG or PNG image"),
    "cut.jpg": (lambda: _encoded("JPEG", seed=1)[:300], "does not decode"),
    "cut.png": (lambda: _encoded("PNG", seed=2)[:400], "does not decode"),
    # header and end marker intact, damaged inside: only decoding finds it
    "inside.png": (
        lambda: (lambda b: b[:100] + b"\0" * 800 + b[900:])(_encoded("PNG", seed=3)),
        "does not decode",
    ),
}


@pytest.fixture
def broken(tmp_path):
    """root/train/{cat,dog}/: 6 good images each, and in dog the broken files of BROKEN."""
    for c, name in enumerate(("cat", "dog")):
        os.makedirs(tmp_path / "train" / name)
        for i in range(6):
            _save(tmp_path / "train" / name / f"{i}.png", seed=10 * c + i)
    for name, (make, _) in BROKEN.items():
        (tmp_path / "train" / "dog" / name).write_bytes(make())
    return str(tmp_path)


def test_broken_images_are_named_skipped_and_counted(broken, capsys):
    ds, info = data.load_split("folder", "train", broken)
    err = capsys.readouterr().err.splitlines()
    paths = data._list_folder(broken, "train")[0]
    names = [os.path.basename(p) for p in paths]
    assert sorted(names[i] for i in info.skipped) == sorted(BROKEN)
    for name, (_, reason) in BROKEN.items():
        line = f"warning: skipping {os.path.join(broken, 'train', 'dog', name)}: {reason}"
        assert any(e.startswith(line) for e in err), (line, err)
    assert err[-1].startswith(f"warning: 5 of 17 images of {os.path.join(broken, 'train')} ")
    # The good images are all there, with their labels; the broken ones in no part.
    assert len(list(ds)) == 12 and info.num_examples == 17
    assert [int(y) for _, y in ds] == [0] * 6 + [1] * 6
    for part in data.PARTS:
        kept = set(data.part_indices(17, part, exclude=info.skipped).tolist())
        assert kept == set(data.part_indices(17, part).tolist()) - set(info.skipped)
    data.load_split("folder", "train", broken)  # named once per process
    assert capsys.readouterr().err == ""
    data._warned.clear()


def test_broken_images_refused_with_the_fail_policy(broken):
    _error(
        r"train: 5 of 17 images cannot be read: .*dog/cut.jpg: does not decode .*; "
        r".*dog/empty.jpg: empty file; .*\(bad_images=skip leaves them out\)$",
        lambda: _with_policy("fail", lambda: data.load_split("folder", "train", broken)),
    )


def test_the_scan_is_cached_by_file_size_and_time(broken, monkeypatch):
    decoded = []
    real = image_scan._decodable

    def counting(paths):
        decoded.append(len(paths))
        return real(paths)

    monkeypatch.setattr(image_scan, "_decodable", counting)
    first = data.load_split("folder", "train", broken)[1].skipped
    assert decoded == [15]  # the files that passed the quick check, small images: all
    assert data.load_split("folder", "train", broken)[1].skipped == first
    assert decoded == [15]  # nothing decoded again
    # A repaired file is looked at again, alone.
    _save(os.path.join(broken, "train", "dog", "inside.png"), seed=99)
    info = data.load_split("folder", "train", broken)[1]
    assert decoded == [15, 1] and len(info.skipped) == 4
    data._warned.clear()


def test_large_images_damaged_inside_are_left_out_of_the_epoch(tmp_path):
    """Large images are checked quickly only; one that then fails to decode in the pipeline
    is dropped and a training epoch keeps its number of batches."""
    rng = np.random.RandomState(0)
    for c in ("a", "b"):
        os.makedirs(tmp_path / "t" / c)
        for i in range(4):
            pixels = rng.randint(0, 256, (80, 80, 3)).astype("uint8")
            Image.fromarray(pixels).save(tmp_path / "t" / c / f"{i}.jpg")
    path = tmp_path / "t" / "b" / "3.jpg"
    good = path.read_bytes()
    path.write_bytes(good[:600] + bytes(800) + good[1400:])  # SOI and EOI markers kept
    ds, info = data.load_split("folder", "t", str(tmp_path))
    assert info.image_size == 224 and info.skipped == ()
    batches = _batches(data.pipeline(ds, info, 2, training=True))
    assert len(batches) == 4 and all(x.shape == (2, 224, 224, 3) for x, _ in batches)
    assert sum(len(y) for _, y in _batches(data.pipeline(ds, info, 3, training=False))) == 7


@pytest.mark.parametrize(
    "name, make",
    [
        ("gray.png", lambda p: _encoded("PNG", Image.fromarray(p[..., 0]))),
        ("gray_alpha.png", lambda p: _encoded("PNG", Image.fromarray(p[..., :2]).convert("LA"))),
        ("rgba.png", lambda p: _encoded("PNG", Image.fromarray(np.dstack([p, p[..., :1]])))),
        ("palette.png", lambda p: _encoded("PNG", Image.fromarray(p).convert("P"))),
        ("gray.jpg", lambda p: _encoded("JPEG", Image.fromarray(p[..., 0]), quality=95)),
        ("rgb.jpg", lambda p: _encoded("JPEG", Image.fromarray(p), quality=95)),
    ],
)
@pytest.mark.parametrize("side", [32, 96])
def test_grayscale_rgba_and_palette_images_decode_to_rgb(tmp_path, name, make, side):
    pixels = np.random.RandomState(0).randint(0, 256, (side, side, 3), np.uint8)
    for c in ("a", "b"):
        os.makedirs(tmp_path / "s" / c)
        (tmp_path / "s" / c / name).write_bytes(make(pixels))
    ds, info = data.load_split("folder", "s", str(tmp_path))
    assert info.skipped == ()
    expected = np.asarray(Image.open(tmp_path / "s" / "a" / name).convert("RGB"))
    image = next(iter(ds))[0]
    if side > data.SMALL_IMAGE:  # large images stay encoded; the pipeline decodes them
        image = data._decode_full(image)
    assert image.shape == (side, side, 3) and image.dtype == tf.uint8
    image = image.numpy().astype(int)
    if name.endswith("png"):
        np.testing.assert_array_equal(image, expected)
    else:  # JPEG decoders round their inverse DCT differently
        assert np.abs(image - expected).mean() < 2
    if name.startswith("gray"):
        assert (image[..., 0] == image[..., 1]).all() and (image[..., 0] == image[..., 2]).all()
    for training in (True, False):
        x, _ = next(iter(data.pipeline(ds, info, 2, training)))
        assert x.shape == (2, info.image_size, info.image_size, 3)


def test_labels_are_mapped_by_class_name():
    assert data.class_mapping(("a", "b", "c"), ("a", "b", "c")) is None
    np.testing.assert_array_equal(data.class_mapping(("a", "b", "c"), ("a", "c")), [0, 2])
    np.testing.assert_array_equal(data.class_mapping(("a", "b"), ("b", "a")), [1, 0])
    with pytest.raises(ValueError) as e:
        data.class_mapping(("a", "b", "c"), ("a", "c", "d"))
    assert str(e.value) == (
        "the data has classes it was not trained on: d; the data lacks its classes b "
        "(classes are matched by name, never by position)"
    )
    raw = tf.data.Dataset.from_tensor_slices((tf.zeros([3, 1]), tf.constant([0, 1, 1], tf.int64)))
    mapped = data.relabel(raw, data.class_mapping(("a", "b", "c"), ("a", "c")))
    assert [int(y) for _, y in mapped] == [0, 2, 2]
