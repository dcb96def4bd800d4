"""Searches a binary cell with BATS (``bats-search``). See bats_tf/commands/search.py.

python scripts/search.py --flagfile=configs/search_tiny.cfg --output_dir=runs/search
"""

from bats_tf.commands.search import run

if __name__ == "__main__":
    run()
