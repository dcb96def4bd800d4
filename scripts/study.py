"""The paper's ablation in one command: bats_tf/commands/study.py."""

from bats_tf.commands.study import run

if __name__ == "__main__":
    run()
