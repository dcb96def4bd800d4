"""Measures search, training and deployment speed: bats_tf/commands/benchmark.py."""

from bats_tf.commands.benchmark import run

if __name__ == "__main__":
    run()
