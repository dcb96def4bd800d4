"""bats-tf: Binary ArchitecTure Search (BATS) in TensorFlow/Keras and Larq."""

from setuptools import find_packages, setup

RUNTIME = [
    "tensorflow==2.21.0",
    "tf-keras==2.21.0",
    "larq==0.14.0",
    "larq-compute-engine==0.16.0",
    "tensorflow-datasets==4.9.10",
    "absl-py==2.5.1",
    "tensorboard==2.21.0",
    "numpy==1.26.4",
    "matplotlib==3.9.4",
    "pillow==11.3.0",
]
DEV = ["pytest==9.0.3", "pytest-timeout==2.4.0", "pytest-xdist==3.8.0", "ruff==0.17.5"]
BENCH = ["torch==2.13.0", "bnn==0.1.2"]

setup(
    name="bats-tf",
    version="0.1.0",
    description="Binary ArchitecTure Search (BATS, ECCV 2020) with TensorFlow, Keras and Larq",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["bats_tf", "bats_tf.*"]),
    python_requires=">=3.10,<3.13",
    package_data={
        "bats_tf": [
            "assets/cifar10_mini/README.md",
            "assets/cifar10_mini/*/*/*.jpg",
            "kernels/fused_ops.cc",
            "configs/*.cfg",
        ]
    },
    entry_points={
        "console_scripts": [
            f"bats-{name}=bats_tf.commands.{name}:run"
            for name in ("search", "train", "evaluate", "export", "study", "demo")
        ]
        + ["bats-plot=bats_tf.commands.plot:run"]
        + ["bats-latency-table=bats_tf.commands.latency_table:run"]
    },
    install_requires=RUNTIME,
    extras_require={"dev": DEV, "bench": BENCH},
    license="Apache-2.0",
)
