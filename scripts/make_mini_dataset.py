"""Copies a subset of an image folder: bats_tf/commands/make_mini_dataset.py."""

from bats_tf.commands.make_mini_dataset import run

if __name__ == "__main__":
    run()
