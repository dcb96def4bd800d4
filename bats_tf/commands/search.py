"""bats-search: searches a binary cell with BATS; writes its genotype, diagrams and logs.

    bats-search --flagfile=search_tiny --output_dir=runs/search

Rerunning the same command after an interruption or a crash continues from the last
checkpoint. Flags and the output folder are checked before TensorFlow starts, the data and
the teacher before anything is written; then the run holds the folder's lock
(:mod:`bats_tf.run_lock`) to its end. Every setting of
:class:`~bats_tf.search_config.SearchConfig` is a flag.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import flags

from bats_tf import class_names, io_utils, run_lock
from bats_tf.commands import common
from bats_tf.search_config import CONFIG_FILE, SearchConfig
from bats_tf.strategy import check_strategy, is_chief

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Folder for genotype, diagrams, logs and checkpoints.")
common.define_flags(SearchConfig)
common.define_bad_images_flag()


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
    common.check_output_not_in_data(f.output_dir)
    check_strategy(config.strategy)
    common.check_writable_dir(f.output_dir)
    return config


def check_output_dir(config: SearchConfig, locked: bool = False) -> bool:
    """--output_dir is new, empty, or holds this same run (True: resume); writes nothing.

    ``locked``: this process holds the folder's lock (else a run that does is refused).
    """
    out = FLAGS.output_dir
    if is_chief(config.strategy) and not locked:
        run_lock.check_free(out)
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
        not io_utils.exists(out) or (io_utils.isdir(out) and not common.own_files(out)),
        f"--output_dir={out}: not empty and not a search run; use a new folder",
    )
    return False


def main(argv):
    common.check_no_arguments(argv)
    config = config_from_flags()
    resume = check_output_dir(config)
    common.start_tensorflow(config.strategy)
    common.use_bad_images_flag()
    from bats_tf.search import Searcher, use_lean_grappler

    out = FLAGS.output_dir
    searcher = Searcher(config, out)  # checks data and teacher before any write
    info = searcher.info
    common.check_classes(info)
    class_names.check_run_data(out, "--output_dir", info.class_names, info.num_examples)
    use_lean_grappler()  # last: later tf.config.optimizer settings undo a part of it
    if searcher.chief:  # every check passed: the folder becomes this run's
        run_lock.RunLock(out, "bats-search").acquire()  # held until the process ends
        resume = check_output_dir(config, locked=True)  # again: no other run changes it now
        io_utils.remove_temporaries(out)
    if searcher.chief and not resume:  # the config first: it claims the folder
        io_utils.atomic_write_json(os.path.join(out, CONFIG_FILE), dataclasses.asdict(config))
    if searcher.chief and class_names.read(out) is None:  # also if a kill came between
        class_names.write(
            out, info.class_names, dataset=info.name, split=config.split,
            num_examples=info.num_examples,
        )  # fmt: skip
    genotype = searcher.run()
    if searcher.chief:
        print(f"genotype: {os.path.join(FLAGS.output_dir, 'genotype.json')}\n{genotype}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
