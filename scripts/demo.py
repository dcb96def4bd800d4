"""The whole pipeline on the embedded CIFAR-10 subset: bats_tf/commands/demo.py."""

from bats_tf.commands.demo import run

if __name__ == "__main__":
    run()
