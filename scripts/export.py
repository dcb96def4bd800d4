"""Exports a trained model to float TFLite and LCE: bats_tf/commands/export.py."""

from bats_tf.commands.export import run

if __name__ == "__main__":
    run()
