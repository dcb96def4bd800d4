"""The command-line programs of bats-tf: the only modules that know absl flags.

Each module defines its flags and a ``run()`` entry point (``bats-search``, ``scripts/search.py``
...). Flags and output folders are checked before TensorFlow is imported.
"""
