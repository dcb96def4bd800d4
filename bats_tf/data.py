"""Datasets for search, training and evaluation: tfds datasets, image folders, partition, pipelines.

``load``, ``load_part`` and ``search_splits`` give raw examples (``image`` uint8 HxWx3,
``label`` int64) in a fixed order; ``pipeline`` batches, augments and normalises them.
Every random choice is seeded, so a run can be repeated and resumed mid-epoch.

Datasets:
  cifar10, cifar100, imagenet2012  tfds data prepared beforehand in ``data_dir``
  folder                           ``data_dir/<split>/<label>/*.{jpg,jpeg,png}``
  cifar10_mini                     a small real CIFAR-10 subset shipped with the package

The partition. Every script cuts a split into the same parts, by index: a fixed permutation
of the split's ``n`` indices (``np.random.RandomState(PARTITION_SEED).permutation(n)``, the
same for every run whatever its ``--seed``) is cut at ``int(round(n * fraction))``:

  part            fractions     used by
  search_weights  [0, 0.25)     the search's weight steps
  search_arch     [0.25, 0.5)   the search's architecture steps
  final_train     [0.5, 0.8)    training the final network on images the search never saw
  val             [0.8, 1.0)    validation and evaluation only
  train           [0, 0.8)      the union of the first three (the default training part)

Nothing that chose an architecture or trained final weights is in ``val``, so the accuracy
reported on it is not measured on the data that picked the cell. The final network may train
on the images that searched it (``train``, as DARTS does) or only on ``final_train``.
``max_examples`` takes a part's first examples in permutation order, so a smaller subset is
always contained in a larger one; the chosen examples keep the split's order.

Broken images of a folder (empty, cut short, not an image, not decodable) are found before a
run (:mod:`bats_tf.image_scan`). By default (``set_bad_images("skip")``) each is named in a
warning and left out of its part, the partition of the others unchanged; ``"fail"`` refuses
the data, naming them. Grayscale, RGBA and palette images decode to RGB.
"""

from __future__ import annotations

import bats_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from bats_tf import image_scan
from bats_tf.class_names import difference as class_difference
from bats_tf.datasets import DATASETS, PARTITION, PARTITION_SEED, PARTS, SEARCH_PARTS
from bats_tf.errors import ConfigError, UsageError

TFDS_IMAGE_SIZE = {"cifar10": 32, "cifar100": 32, "imagenet2012": 224}
MINI_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "cifar10_mini")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
SMALL_IMAGE = 64  # image_size at most this: CIFAR-like data and augmentation
LARGE_SHUFFLE_BUFFER = 10_000  # encoded large images held for shuffling (small ones: the split)
EVAL_CROP = 0.875  # ImageNet-like eval: resize the shorter side to image_size / EVAL_CROP

_CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
_CIFAR100 = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_MEAN_STD = {"cifar10": _CIFAR10, "cifar10_mini": _CIFAR10, "cifar100": _CIFAR100}

AUTOTUNE = tf.data.AUTOTUNE
Select = Callable[[np.ndarray | None], tf.data.Dataset]
BAD_IMAGE_POLICIES = image_scan.BAD_IMAGE_POLICIES
_policy = {"bad_images": "skip"}
_warned: set[str] = set()  # folders whose broken images this process has named


class DataError(UsageError):
    """A dataset's folder or file is wrong; the message names it. (A wrong setting raises
    :class:`~bats_tf.errors.ConfigError`.)"""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a training loop need to know about a dataset split."""

    name: str
    num_classes: int
    image_size: int  # side of the model input
    num_examples: int  # of the split that was asked for (broken images included)
    class_names: tuple[str, ...]
    skipped: tuple[int, ...] = ()  # indices of broken images, left out of every part


def set_bad_images(policy: str) -> None:
    """What the broken images of a folder dataset do: ``skip`` (named in a warning each, and
    left out) or ``fail`` (the data is refused, naming them)."""
    if policy not in BAD_IMAGE_POLICIES:
        raise ConfigError("bad_images", f"must be one of {', '.join(BAD_IMAGE_POLICIES)}", policy)
    _policy["bad_images"] = policy


def class_mapping(known: Sequence[str], found: Sequence[str]) -> np.ndarray | None:
    """The labels of data with classes ``found``, as indices of ``known``, matched by name.

    None when the classes are the same, in the same order. Data may lack some of ``known``
    (a smaller split); a class ``known`` does not hold raises ``ValueError`` naming the
    classes that differ.
    """
    known, found = tuple(known), tuple(found)
    if known == found:
        return None
    if any(c not in known for c in found):
        raise ValueError(class_difference(known, found))
    return np.array([known.index(c) for c in found], np.int64)


def relabel(raw: tf.data.Dataset, mapping: np.ndarray | None) -> tf.data.Dataset:
    """Raw examples with their labels mapped by :func:`class_mapping` (None: unchanged)."""
    if mapping is None:
        return raw
    table = tf.constant(mapping)
    return raw.map(lambda image, label: (image, tf.gather(table, label)))


def load_split(
    dataset: str, split: str, data_dir: str | None = None
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Raw examples (image uint8 HxWx3, label int64) of one split, in a fixed order."""
    info, select = _source(dataset, split, data_dir)
    return select(None), info


def part_indices(
    n: int,
    part: str | None,
    max_examples: int | None = None,
    *,
    dataset: str = "the split",
    part_param: str = "part",
    examples_param: str = "max_examples",
    exclude: Sequence[int] = (),
) -> np.ndarray:
    """Sorted indices of one part of the partition of ``n`` examples (None: all ``n``).

    With ``max_examples``, the part's first ``max_examples`` indices in permutation order (a
    stable prefix: a larger ``max_examples`` contains a smaller one). ``exclude`` (broken
    images) are left out before the prefix is taken; the other indices keep their part.
    ``dataset``, ``part_param`` and ``examples_param`` name the settings in error messages.
    """
    if part is None:
        lo, hi, where = 0, n, dataset
    elif part in PARTITION:
        lo, hi = (int(round(n * fraction)) for fraction in PARTITION[part])
        where = f"the {part} part of {dataset}"
    else:
        raise ConfigError(part_param, f"unknown part (choose from {', '.join(PARTS)})", part)
    if lo >= hi:
        raise DataError(f"{where}: empty ({dataset} has only {n} examples)")
    indices = np.random.RandomState(PARTITION_SEED).permutation(n)[lo:hi]
    if len(exclude):
        indices = indices[~np.isin(indices, exclude)]
        if not len(indices):
            raise DataError(f"{where}: empty (every image of it is broken)")
    if max_examples is not None:
        if not 0 < max_examples <= len(indices):
            raise ConfigError(
                examples_param,
                f"must be in [1, {len(indices)}] ({where} has {len(indices)} examples)",
                max_examples,
            )
        indices = indices[:max_examples]
    return np.sort(indices)


def load_part(
    dataset: str,
    split: str,
    data_dir: str | None,
    part: str | None,
    max_examples: int | None = None,
    *,
    part_param: str = "part",
    examples_param: str = "max_examples",
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """Raw examples of one part of a split, and the info of the whole split.

    # Arguments
        dataset: a name of ``DATASETS`` (``folder``: an image folder at ``data_dir``).
        split: the split the part is cut from (``train``, ``test``, a folder's subfolder).
        data_dir: the tfds data folder, or the image folder's root.
        part: a part of the fixed partition (``PARTS``), or None for the whole split.
        max_examples: the part's first examples in the partition's order (None: all).
        part_param, examples_param: the settings' names in error messages.
    """
    info, select = _source(dataset, split, data_dir)
    if part is None and max_examples is None:
        return select(None), info
    indices = part_indices(
        info.num_examples,
        part,
        max_examples,
        dataset=info.name,
        part_param=part_param,
        examples_param=examples_param,
        exclude=info.skipped,
    )
    return select(indices), info


def search_splits(
    dataset: str,
    data_dir: str | None = None,
    split: str = "train",
    max_examples: int | None = None,
) -> tuple[tf.data.Dataset, tf.data.Dataset, DatasetInfo]:
    """(``search_weights`` part, ``search_arch`` part) of one split, and the split's info.

    ``max_examples`` is the total: the weight part gets its first ``max_examples // 2``
    examples, the architecture part its first ``max_examples - max_examples // 2``.
    """
    info, select = _source(dataset, split, data_dir)
    n = info.num_examples
    sizes = (None, None)
    if max_examples is not None:
        nw, na = (
            len(part_indices(n, p, dataset=info.name, exclude=info.skipped)) for p in SEARCH_PARTS
        )
        most = min(2 * nw + 1, 2 * na)  # max_examples // 2 <= nw, the rest <= na
        if not 2 <= max_examples <= most:
            raise ConfigError(
                "max_examples",
                f"must be in [2, {most}] (half each from the search parts of {info.name}, "
                f"which have {nw} and {na} examples)",
                max_examples,
            )
        sizes = (max_examples // 2, max_examples - max_examples // 2)
    weights, arch = (
        select(part_indices(n, p, m, dataset=info.name, exclude=info.skipped))
        for p, m in zip(SEARCH_PARTS, sizes, strict=True)
    )
    return weights, arch, info


def subset(
    dataset: str,
    split: str,
    data_dir: str | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> tuple[tf.data.Dataset, DatasetInfo]:
    """A seeded random subset of ``max_examples`` examples of one split (None: all), in order.

    For looking at a few images (export's parity check); runs that train or report accuracy
    use ``load_part``.
    """
    info, select = _source(dataset, split, data_dir)
    if max_examples is None:
        return select(None), info
    good = np.setdiff1d(np.arange(info.num_examples), info.skipped)
    n = len(good)
    if not 0 < max_examples <= n:
        raise ConfigError(
            "max_examples", f"must be in [1, {n}] ({info.name} has {n} examples)", max_examples
        )
    chosen = good[np.random.RandomState(seed).permutation(n)[:max_examples]]
    return select(np.sort(chosen)), info


def pipeline(
    ds: tf.data.Dataset,
    info: DatasetInfo,
    batch_size: int,
    training: bool,
    seed: int = 0,
    epoch: int = 0,
    skip_batches: int = 0,
    drop_remainder: bool | None = None,
    cache: bool = True,
) -> tf.data.Dataset:
    """Batches of (image float32 normalised, label int64) for one epoch.

    # Arguments
        ds: raw examples (from ``load_part`` or ``search_splits``).
        info: their dataset's info (image size, normalisation).
        batch_size: examples per batch.
        training: shuffle and augment, and drop a last partial batch (unless
            ``drop_remainder`` says otherwise).
        seed, epoch: what the order and the augmentation derive from.
        skip_batches: the epoch's batches to leave out at its start (a resumed epoch).
        drop_remainder: drop a last partial batch (None: when training).
        cache: keep small decoded images in memory.

    Training shuffles with a seed made from (seed, epoch) and augments with stateless ops
    seeded from (seed, epoch, example index), so an epoch is the same in every run (under the
    same TensorFlow global seed, if the program sets one); ``skip_batches`` drops the epoch's
    first batches to resume mid-epoch. CIFAR-like data (image_size <= 64): pad-4 random crop
    and flip; with ``cache``, the decoded images are kept in memory, shared by every pipeline
    built on the same ``ds``. ImageNet-like data arrives encoded and is never cached: training
    decodes only a random crop (``decode_and_crop_jpeg``), resizes it and flips it; evaluation
    resizes the shorter side to image_size / 0.875 and crops the center.
    """
    if drop_remainder is None:
        drop_remainder = training
    size = info.image_size
    if cache and size <= SMALL_IMAGE:
        ds = _cached(ds)
    shuffle_seed, augment_seed = np.random.SeedSequence([seed, epoch]).generate_state(2)
    ds = ds.enumerate()
    if training:
        ds = ds.shuffle(
            _shuffle_buffer(ds, info), seed=int(shuffle_seed), reshuffle_each_iteration=False
        )
    ds = ds.skip(skip_batches * batch_size)
    mean, std = _MEAN_STD.get(info.name, _IMAGENET)
    mean, std = tf.constant(mean) * 255.0, tf.constant(std) * 255.0

    def prepare(index, example):
        image, label = example
        seed = tf.stack([tf.constant(augment_seed, tf.int64), index])
        if size > SMALL_IMAGE:
            image = _random_crop_large(image, size, seed) if training else _center_crop(image, size)
        elif training:
            image = _augment_small(image, size, seed)
        return (tf.cast(image, tf.float32) - mean) / std, label

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    if size <= SMALL_IMAGE:
        return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)
    # Large images are decoded here, a crop at a time: one the scan could not tell is broken
    # (damaged inside) is left out rather than stop the run, and a training epoch keeps its
    # number of batches (the last one is filled from the epoch's start).
    count = int(ds.cardinality())
    ds = ds.ignore_errors(log_warning=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if drop_remainder and count >= 0:
        ds = ds.repeat().take(count // batch_size)
    return ds.prefetch(AUTOTUNE)


# Sources: info and a function that selects examples by index (None: all), decoded.


def _source(dataset: str, split: str, data_dir: str | None) -> tuple[DatasetInfo, Select]:
    if dataset in TFDS_IMAGE_SIZE:
        return _tfds_source(dataset, split, data_dir)
    if dataset == "folder":
        if not data_dir:
            raise ConfigError("data_dir", "required with dataset=folder")
        return _folder_source("folder", split, data_dir)
    if dataset == "cifar10_mini":
        return _folder_source("cifar10_mini", split, MINI_DIR)
    raise ConfigError("dataset", f"unknown (choose from {', '.join(DATASETS)})", dataset)


def _tfds_source(name: str, split: str, data_dir: str | None) -> tuple[DatasetInfo, Select]:
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        root = os.path.dirname(os.path.dirname(builder.data_dir))  # <root>/<name>/<version>
        manual = (
            " (its archives in <data_dir>/downloads/manual first)"
            if name.startswith("imagenet")
            else ""
        )
        raise ConfigError(
            "dataset",
            f"no prepared tfds data in {builder.data_dir}; prepare it once with "
            f"`tfds build {name} --data_dir={root}`{manual}, or use dataset=folder with a "
            "data_dir",
            name,
        )
    try:
        num_examples = builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        splits = ", ".join(sorted(builder.info.splits.keys()))
        raise ConfigError("split", f"not a split of {name} (splits: {splits})", split) from None
    labels = builder.info.features["label"]
    size = TFDS_IMAGE_SIZE[name]
    info = DatasetInfo(name, labels.num_classes, size, num_examples, tuple(labels.names))

    def select(indices):
        ds = builder.as_dataset(
            split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()}
        )
        ds = ds.map(lambda ex: (ex["image"], ex["label"]))
        if indices is not None:
            keep = np.zeros(num_examples, bool)
            keep[indices] = True
            keep = tf.constant(keep)
            ds = (
                ds.enumerate()
                .filter(lambda i, _: tf.gather(keep, i))
                .map(lambda _, example: example)
            )
            ds = ds.apply(tf.data.experimental.assert_cardinality(len(indices)))
        return ds.map(lambda image, label: (_decode(image, size), label), AUTOTUNE)

    return info, select


def _folder_source(name: str, split: str, root: str) -> tuple[DatasetInfo, Select]:
    paths, labels, class_names = _list_folder(root, split)
    size, bad = _scan_folder(os.path.join(root, split), paths, labels)
    skipped = tuple(sorted(bad))
    info = DatasetInfo(name, len(class_names), size, len(paths), class_names, skipped)
    good = np.setdiff1d(np.arange(len(paths)), skipped)

    def select(indices):
        chosen = good if indices is None else indices
        ds = tf.data.Dataset.from_tensor_slices((paths[chosen], labels[chosen]))
        return ds.map(lambda p, label: (_decode(tf.io.read_file(p), size), label), AUTOTUNE)

    return info, select


def _list_folder(root: str, split: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Image paths (sorted by class, then file name), labels and class names of a split."""
    if not os.path.isdir(root):
        raise ConfigError("data_dir", "no such directory", root)
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        found = ", ".join(_subdirs(root)) or "none"
        raise ConfigError("data_dir", f"no split folder '{split}' (splits found: {found})", root)
    class_names = tuple(_subdirs(split_dir))
    if not class_names:
        raise DataError(f"{split_dir}: no class folders (expected <label>/*.jpg inside)")
    paths, labels = [], []
    for label, class_name in enumerate(class_names):
        class_dir = os.path.join(split_dir, class_name)
        with os.scandir(class_dir) as entries:
            files = sorted(
                e.name for e in entries if e.is_file() and e.name.lower().endswith(IMAGE_EXTENSIONS)
            )
        if not files:
            raise DataError(f"{class_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(class_dir, f) for f in files]
        labels += [label] * len(files)
    return np.array(paths), np.array(labels, np.int64), class_names


def _subdirs(path: str) -> list[str]:
    with os.scandir(path) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _scan_folder(
    split_dir: str, paths: np.ndarray, labels: np.ndarray
) -> tuple[int, dict[int, str]]:
    """(model input side, {index: reason} of the broken images) of a split's images.

    The side comes from the first readable image. Broken images are named: one warning line
    each, and a count (policy ``skip``), or one error (policy ``fail``). A class left without
    a readable image is refused.
    """
    scan = image_scan.ImageScan(split_dir, paths)
    size = None
    for i in scan.quick_ok():
        try:
            size = _image_size(paths[i])
            break
        except DataError as e:
            scan.mark_bad(i, str(e).removeprefix(f"{paths[i]}: "))
    bad = scan.finish(decode_all=size is not None and size <= SMALL_IMAGE)
    if bad and _policy["bad_images"] == "fail":
        shown = "; ".join(f"{paths[i]}: {reason}" for i, reason in list(bad.items())[:5])
        more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise DataError(
            f"{split_dir}: {len(bad)} of {len(paths)} images cannot be read: {shown}{more} "
            "(bad_images=skip leaves them out)"
        )
    if size is None:
        first, reason = next(iter(bad.items()))
        raise DataError(
            f"{split_dir}: no readable image (all {len(paths)} are broken; {paths[first]}: "
            f"{reason})"
        )
    if bad:
        left = np.bincount(np.delete(labels, list(bad)), minlength=labels.max() + 1)
        if not left.all():
            first = int(np.flatnonzero(left == 0)[0])
            i = int(np.flatnonzero(labels == first)[0])
            raise DataError(
                f"{os.path.dirname(paths[i])}: no readable image (all "
                f"{int(np.sum(labels == first))} are broken; {paths[i]}: {bad[i]})"
            )
    if bad and split_dir not in _warned:
        _warned.add(split_dir)
        for i, reason in bad.items():
            print(f"warning: skipping {paths[i]}: {reason}", file=sys.stderr)
        print(
            f"warning: {len(bad)} of {len(paths)} images of {split_dir} skipped as unreadable "
            "(bad_images=fail refuses them)",
            file=sys.stderr,
            flush=True,
        )
    return size, bad


def _image_size(path: str) -> int:
    """Model input side for a folder dataset, from an image: small side kept, else 224."""
    try:
        with Image.open(path) as image:
            image.verify()
            side = max(image.size)
    except Exception as e:  # PIL raises many kinds
        raise DataError(f"{path}: not a readable image ({e})") from None
    return side if side <= SMALL_IMAGE else 224


def _decode(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """A source's image: small ones decoded to uint8 size x size x 3; large ones stay encoded
    (:func:`pipeline` decodes them, a crop at a time)."""
    if size > SMALL_IMAGE:
        return encoded
    image = tf.image.resize(_decode_full(encoded), [size, size])  # same size: values unchanged
    return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _decode_full(encoded: tf.Tensor) -> tf.Tensor:
    """JPEG/PNG bytes -> uint8 H x W x 3."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


# Pipeline pieces.


def _cached(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds.cache()``, made once per dataset object so all its pipelines share the cache."""
    cached = getattr(ds, "_bats_cached", None)
    if cached is None:
        cached = ds.cache()
        ds._bats_cached = cached
    return cached


def _shuffle_buffer(ds: tf.data.Dataset, info: DatasetInfo) -> int:
    n = int(ds.cardinality())
    n = n if n > 0 else info.num_examples
    return n if info.image_size <= SMALL_IMAGE else min(n, LARGE_SHUFFLE_BUFFER)


def _augment_small(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Pad 4, random crop, random flip of a decoded CIFAR-like image (stateless: the same
    seed gives the same result)."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    image = tf.pad(image, [[4, 4], [4, 4], [0, 0]])
    image = tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def _random_crop_large(encoded: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
    """Random resized crop and flip of an encoded image, as Inception and larq-zoo train:
    a JPEG is decoded only inside the crop window (stateless: the same seed, the same crop)."""
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    jpeg = tf.io.is_jpeg(encoded)
    shape = tf.cond(
        jpeg, lambda: tf.image.extract_jpeg_shape(encoded), lambda: tf.shape(_decode_full(encoded))
    )
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=crop_seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], extent[0], extent[1]])
    crop = tf.cond(
        jpeg,
        lambda: tf.image.decode_and_crop_jpeg(encoded, window, channels=3),
        lambda: tf.slice(_decode_full(encoded), begin, extent),
    )
    crop.set_shape([None, None, 3])
    image = tf.image.resize(crop, [size, size], antialias=True)
    return tf.image.stateless_random_flip_left_right(image, flip_seed)


def _center_crop(encoded: tf.Tensor, size: int) -> tf.Tensor:
    """Decodes, resizes the shorter side to size / EVAL_CROP, then crops the center."""
    image = _decode_full(encoded)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = round(size / EVAL_CROP) / tf.reduce_min(shape)
    image = tf.image.resize(image, tf.cast(tf.round(shape * scale), tf.int32), antialias=True)
    return tf.image.resize_with_crop_or_pad(image, size, size)
