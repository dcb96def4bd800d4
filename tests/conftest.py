"""Shared fixtures: small generated image-folder datasets."""

import os

import numpy as np
import pytest
from PIL import Image


def make_folder_dataset(
    root, classes=3, per_class=16, size=16, splits=("train",), seed=0, noise=40, ext="png"
):
    """``root/<split>/<class>/*.<ext>``: each class a colour with uniform noise of +-``noise``,
    so it can be learned (``noise=255``: random images)."""
    rng = np.random.RandomState(seed)
    for split in splits:
        for c in range(classes):
            folder = os.path.join(root, split, f"class{c}")
            os.makedirs(folder, exist_ok=True)
            base = rng.randint(0, 256, 3)
            for i in range(per_class):
                jitter = rng.randint(-noise, noise + 1, (size, size, 3))
                pixels = np.clip(base + jitter, 0, 255).astype("uint8")
                Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.{ext}"))
    return str(root)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A 3-class, 16x16 image folder with train and test splits."""
    return make_folder_dataset(tmp_path_factory.mktemp("tiny"), splits=("train", "test"))
