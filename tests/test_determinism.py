"""``deterministic=True``: two processes that train one seed end with the same weights."""

import os
import subprocess
import sys

import numpy as np
from conftest import RUN_TIMEOUT, make_folder_dataset

SCRIPT = """
import sys
import numpy as np
from bats_tf import training
from bats_tf.train_config import TrainConfig

config = TrainConfig(
    genotype="bats_paper", dataset="folder", data_dir=sys.argv[1], init_channels=32,
    layers=3, groups=1, epochs=1, batch_size=20, stages=(1,), verbose=0, seed=0,
    deterministic=True,
)
training.train(config, sys.argv[2])
model = training.load_model(sys.argv[2] + "/model.keras")
np.savez(sys.argv[3], *model.get_weights())
"""


def _train(folder, out, weights):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    subprocess.run(
        [sys.executable, "-c", SCRIPT, folder, out, weights],
        check=True,
        env=env,
        timeout=RUN_TIMEOUT,
    )
    with np.load(weights) as f:
        return [f[k] for k in sorted(f.files, key=lambda k: int(k.split("_")[1]))]


def test_two_trainings_of_one_seed_are_identical(tmp_path):
    # 32x32 images and C=32: on the 16x16 folder with C=16 the sums happened to agree.
    folder = make_folder_dataset(tmp_path / "data", per_class=14, size=32)
    a = _train(folder, str(tmp_path / "a"), str(tmp_path / "a.npz"))
    b = _train(folder, str(tmp_path / "b"), str(tmp_path / "b.npz"))
    assert len(a) == len(b) > 50
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_array_equal(x, y, err_msg=f"weight {i}")
