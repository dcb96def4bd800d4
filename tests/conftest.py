"""Shared fixtures: small generated image-folder datasets, and tiny search and training
configs on them."""

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


# Seconds a test's subprocess may take: a guard against hangs, far above any run's time, even
# on a machine the host slows down several times.
RUN_TIMEOUT = 3000


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    """A 3-class, 16x16 image folder with train and test splits."""
    return make_folder_dataset(tmp_path_factory.mktemp("tiny"), splits=("train", "test"))


# A search of a few seconds on an image folder: 2 epochs, 4 channels, 3 cells.
TINY_SEARCH = dict(
    dataset="folder",
    epochs=2,
    warmup_epochs=0,
    batch_size=4,
    init_channels=4,
    layers=3,
    nodes=2,
    groups=2,
    seed=3,
    deterministic=True,
    a_lr=0.05,  # large enough that alphas visibly move in a few steps
)


def tiny_search_config(data_dir, **kw):
    """The TINY_SEARCH config on an image folder, with ``kw`` changed."""
    from bats_tf.search_config import SearchConfig

    return SearchConfig(**{**TINY_SEARCH, "data_dir": data_dir, **kw})


def as_flags(settings):
    """Command-line flags of a settings dict; ``None`` and ``False`` values are left out."""
    return [
        f"--{k}" if v is True else f"--{k}={v}"
        for k, v in settings.items()
        if v is not None and v is not False
    ]


def tiny_train_config(data_dir, **kw):
    """A one-stage, one-epoch training of the paper's cell on an image folder, 8 channels."""
    from bats_tf.train_config import TrainConfig

    base = dict(
        genotype="bats_paper",
        dataset="folder",
        data_dir=data_dir,
        init_channels=8,
        layers=3,
        groups=1,
        epochs=1,
        batch_size=16,
        stages=(1,),
        verbose=0,
    )
    return TrainConfig(**{**base, **kw})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """With ``-n 2 --dist loadgroup`` (``make test``), the tests that use one module-scoped
    fixture of their file run on one worker, so that the fixture is built once."""
    for item in items:
        shared = sorted(
            name
            for name, defs in item._fixtureinfo.name2fixturedefs.items()
            if defs and defs[-1].scope == "module"
        )
        if shared:
            item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}.{shared[0]}"))
