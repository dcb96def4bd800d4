"""Exports a trained model to float TFLite and LCE, checks it and compares the two.

bats-export --model=runs/train_tiny/model.keras --dataset=cifar10_mini \
    --split=test --output_dir=runs/train_tiny/export

Fails if LCE leaves binary convs in float; compares LCE outputs with Keras on real images
and times both flatbuffers at batch 1; writes the flatbuffers and export.json. The model and
the images are checked before the output folder is created (a split with classes the model
does not know is refused); then the export holds the folder's lock to its end, and a rerun
after an interruption writes the same files again.
"""

import os
import sys

from absl import flags

from bats_tf import class_names, io_utils, run_lock
from bats_tf.commands import common

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Saved .keras model (from scripts/train.py).")
flags.DEFINE_string("output_dir", None, "Folder for the flatbuffers and export.json.")
common.define_data_flags("test", "Dataset of the real images compared (--split)", "cifar10_mini")
flags.DEFINE_integer("num_images", 200, "Images compared between LCE and Keras.")
flags.DEFINE_list("threads", ["1", "2"], "Thread counts to time.")
flags.DEFINE_integer("runs", 50, "Timed runs per latency figure (median reported).")
flags.DEFINE_bool("strict", True, "Fail if LCE made fewer LceBconv2d ops than binary convs.")
common.define_bad_images_flag()


def main(argv):
    common.check_no_arguments(argv)
    f = FLAGS
    common.check_model_flag()
    common.check(f.output_dir, "--output_dir is required")
    common.check_at_least(1, "num_images", "runs")
    common.check_data_flags()
    common.check(
        all(t.isdigit() and int(t) >= 1 for t in f.threads),
        f"--threads={','.join(f.threads)}: expected positive integers",
    )
    common.check_output_not_in_data(f.output_dir)
    common.check_writable_dir(f.output_dir)
    run_lock.check_free(f.output_dir)
    ours = {"model_float.tflite", "model_lce.tflite", "export.json", "classes.json"}
    found = common.own_files(f.output_dir) if os.path.isdir(f.output_dir) else []
    others = sorted(set(found) - ours)
    common.check(
        not others,
        f"--output_dir={f.output_dir}: holds other files ({', '.join(others[:3])}); "
        "use a new folder",
    )
    common.start_tensorflow()
    common.use_bad_images_flag()
    import numpy as np

    from bats_tf import data, export, model_files, training

    _, info = data.load_split(f.dataset, f.split, f.data_dir)
    # A seeded subset, so the compared images cover all classes of a class-sorted folder.
    usable = info.num_examples - len(info.skipped)
    raw, _ = data.subset(f.dataset, f.split, f.data_dir, min(f.num_images, usable))
    try:
        model = training.load_model(f.model)
    except ValueError as e:
        raise common.UsageError(f"--model: {e}") from None
    common.check(
        model.input_shape[1] == info.image_size,
        f"--model={f.model}: takes {model.input_shape[1]}px images, {info.name} has "
        f"{info.image_size}px",
    )
    outputs = model.output_shape[-1]
    known = model_files.class_names_or_assumed(f.model, outputs, info.class_names, "--model")
    try:
        data.class_mapping(known, info.class_names)
    except ValueError as e:
        raise common.UsageError(f"--split={f.split}: {e}") from None
    images = np.concatenate([x.numpy() for x, _ in data.pipeline(raw, info, 100, False)])
    run_lock.RunLock(f.output_dir, "bats-export").acquire()  # held until the process ends
    io_utils.remove_temporaries(f.output_dir)
    class_names.write(f.output_dir, known)  # the flatbuffers' outputs, by name
    try:
        report = export.export(
            model, f.output_dir, images, [int(t) for t in f.threads], f.runs, f.strict
        )
    except export.ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    print(export.format_report(report))
    print(f"written: {os.path.join(f.output_dir, export.REPORT_FILE)}")


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
