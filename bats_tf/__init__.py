"""bats-tf: Binary ArchitecTure Search (BATS, ECCV 2020) with TensorFlow, Keras 2 and Larq.

Larq builds on Keras 2, so the package selects the legacy Keras (``tf-keras``) before
TensorFlow is imported anywhere. Import ``bats_tf`` first in every entry point.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
