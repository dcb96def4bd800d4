"""bats-latency-table: measures the per-op LCE latencies a search with --cost=latency reads.

    bats-latency-table --flagfile=configs/study_cpu_search.cfg --latency_table=latency.json

Takes the flags of a search (bats-search; no --output_dir): the search space, the image size
of its dataset (or --image_size), init_channels, layers, nodes, groups, deployable, scaling
and shortcut give every op and shape the search's cost table needs. Each is measured with
LCE's interpreter at batch 1 on 1 thread (median of --runs calls, less the interpreter's
fixed overhead; see bats_tf/latency.py) and saved at once into --latency_table, a JSON file
that is also a cache: a rerun, or another search's flags, measure only what the file lacks.
A file measured on another device is refused.

--models_dir=DIR also writes each op's LCE flatbuffer there, with DIR/models.json (key ->
file name), to time them on a phone with LCE's lce_benchmark_model and write the figures
into a table file of the same format (bats_tf/latency.py says how).
"""

from __future__ import annotations

import os

from absl import flags

from bats_tf import io_utils, latency
from bats_tf.commands import common
from bats_tf.search_config import SearchConfig

FLAGS = flags.FLAGS
common.define_flags(SearchConfig)
common.define_bad_images_flag()
flags.DEFINE_integer(
    "image_size",
    None,
    "Side of the search's input images (default: read from --dataset, as the search does).",
    lower_bound=1,
)
flags.DEFINE_integer("runs", latency.RUNS, "Timed calls per op (the median is kept).", 1)
flags.DEFINE_string(
    "models_dir", None, "Also write each op's LCE flatbuffer and models.json to this folder."
)


def config_from_flags() -> SearchConfig:
    """The checked search config; the table file and --models_dir checked (no TensorFlow)."""
    f = FLAGS
    folder = f.dataset == "folder" and f.data_dir
    config = common.config_from_flags(
        SearchConfig,
        data_dir=io_utils.absolute(f.data_dir) if folder else f.data_dir,
        latency_table=io_utils.absolute(f.latency_table) if f.latency_table else None,
    )
    common.check(f.latency_table, "--latency_table is required (the file to write or extend)")
    if f.image_size is None:
        common.check_data_flags()
    path = f.latency_table
    if not io_utils.is_remote(path):
        common.check(not os.path.isdir(path), f"--latency_table={path}: a folder; give a file")
        common.check_writable_dir(os.path.dirname(os.path.abspath(path)), "--latency_table")
    latency.check_device(config.latency_table)  # a file there is a table of this machine
    if f.models_dir:
        common.check(
            not os.path.exists(f.models_dir) or os.path.isdir(f.models_dir),
            f"--models_dir={f.models_dir}: not a folder",
        )
        common.check_writable_dir(f.models_dir, "--models_dir")
        common.check_output_not_in_data(f.models_dir, "--models_dir")
    return config


def main(argv):
    common.check_no_arguments(argv)
    config = config_from_flags()
    f = FLAGS
    common.start_tensorflow()
    common.use_bad_images_flag()
    from bats_tf import cost, data

    image_size = f.image_size
    if image_size is None:
        _, info = data.load_split(config.dataset, config.split, config.data_dir)
        image_size = info.image_size
    shapes = cost.edge_shapes(
        image_size,
        config.init_channels,
        config.layers,
        config.nodes,
        config.groups,
        config.deployable,
    )
    path, device = config.latency_table, latency.device()
    known = latency.check_device(path, device)
    needed = latency.needed_keys(config.search_space, shapes)
    missing = [k for k in needed if k not in known]
    print(
        f"{config.search_space} space at {image_size}px: {len(needed)} entries needed, "
        f"{len(needed) - len(missing)} in {path}, {len(missing)} to measure on {device}",
        flush=True,
    )
    if f.models_dir:
        os.makedirs(f.models_dir, exist_ok=True)
        io_utils.remove_temporaries(f.models_dir)
    latency.measure(
        config.search_space,
        shapes,
        known=known,
        runs=f.runs,
        scaling=config.scaling,
        shortcut=config.shortcut,
        models_dir=f.models_dir,
        on_entry=lambda key, ms: latency.save(path, {key: ms}, device),
        progress=lambda line: print(line, flush=True),
    )
    latency.load(path, needed)  # every entry the search needs is there
    print(f"written: {path}")
    if f.models_dir:
        print(f"written: {os.path.join(f.models_dir, latency.MODELS_FILE)}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
