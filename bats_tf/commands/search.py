"""bats-search: searches a binary cell with BATS; writes its genotype, diagrams and logs.

    bats-search --flagfile=search_tiny --output_dir=runs/search

Rerunning the same command after an interruption or a crash continues from the last
checkpoint. Flags and the output folder are checked before TensorFlow starts. Every setting
of :class:`~bats_tf.search_config.SearchConfig` is a flag.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from bats_tf import io_utils
from bats_tf.commands import common
from bats_tf.search_config import CONFIG_FILE, SearchConfig
from bats_tf.strategy import check_strategy, is_chief

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Folder for genotype, diagrams, logs and checkpoints.")
common.define_flags(SearchConfig)


def config_from_flags() -> SearchConfig:
    """The checked config (raises an error naming the flag); no TensorFlow."""
    f = FLAGS
    common.check(f.output_dir, "--output_dir is required")
    folder = f.dataset == "folder" and f.data_dir
    config = common.config_from_flags(
        SearchConfig,
        data_dir=io_utils.absolute(f.data_dir) if folder else f.data_dir,
        teacher=io_utils.absolute(f.teacher) if f.teacher else None,
    )
    if any(io_utils.is_remote(p) for p in (f.output_dir, f.data_dir or "", f.teacher or "")):
        common.start_tensorflow(config.strategy)  # TensorFlow reads remote file systems
    common.check(
        f.teacher is None or io_utils.exists(f.teacher),
        f"--teacher={f.teacher}: no such file or folder",
    )
    common.check_data_flags()
    check_strategy(config.strategy)
    common.check_writable_dir(f.output_dir)
    return config


def check_output_dir(config: SearchConfig) -> bool:
    """--output_dir is new, empty, or holds this same run (True: resume); writes nothing."""
    out = FLAGS.output_dir
    path = os.path.join(out, CONFIG_FILE)
    wanted = dataclasses.asdict(config)
    if io_utils.exists(path):
        try:
            found = json.loads(io_utils.read_text(path))
        except (OSError, ValueError) as e:
            raise common.UsageError(f"{path}: unreadable run config ({e})") from None
        # A setting added since that run was saved counts as its default.
        defaults = dataclasses.asdict(SearchConfig())
        found = {**{k: defaults[k] for k in wanted if k not in found}, **found}
        diff = sorted(k for k in set(wanted) | set(found) if found.get(k) != wanted.get(k))
        common.check(
            not diff,
            f"--output_dir={out}: holds another run (differs in "
            f"{', '.join('--' + k for k in diff)}); use a new --output_dir",
        )
        return True
    if not is_chief(config.strategy):
        return False  # the chief checks the folder; the others may find its first files
    common.check(
        not io_utils.exists(out) or (io_utils.isdir(out) and not io_utils.listdir(out)),
        f"--output_dir={out}: not empty and not a search run; use a new folder",
    )
    return False


def main(argv):
    common.check_no_arguments(argv)
    config = config_from_flags()
    resume = check_output_dir(config)
    common.start_tensorflow(config.strategy)
    from bats_tf.search import Searcher, use_lean_grappler

    searcher = Searcher(config, FLAGS.output_dir)  # checks data and teacher before any write
    use_lean_grappler()  # last: later tf.config.optimizer settings undo a part of it
    if searcher.chief and not resume:
        io_utils.atomic_write_json(
            os.path.join(FLAGS.output_dir, CONFIG_FILE), dataclasses.asdict(config)
        )
    genotype = searcher.run()
    if searcher.chief:
        print(f"genotype: {os.path.join(FLAGS.output_dir, 'genotype.json')}\n{genotype}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
