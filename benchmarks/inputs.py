"""Random CIFAR-shaped batches for the parts that leave the data pipeline out."""

import numpy as np

NUM_CLASSES, IMAGE_SIZE = 10, 32


def random_batch(batch: int, seed: int, channels_first: bool = False):
    rng = np.random.RandomState(seed)
    images = rng.uniform(-1, 1, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    labels = rng.randint(0, NUM_CLASSES, batch).astype("int64")
    return (images.transpose(0, 3, 1, 2).copy() if channels_first else images), labels
