"""Trains a genotype as a binary network (``bats-train``). See bats_tf/commands/train.py.

python scripts/train.py --flagfile=configs/train_tiny.cfg --genotype=bats_paper \
    --output_dir=runs/train_tiny
"""

from bats_tf.commands.train import run

if __name__ == "__main__":
    run()
