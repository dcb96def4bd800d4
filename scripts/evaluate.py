"""Evaluates a trained model: bats_tf/commands/evaluate.py."""

from bats_tf.commands.evaluate import run

if __name__ == "__main__":
    run()
