"""bats-evaluate: evaluates a trained model: top-1, top-5, loss, params, BOPs, FLOPs and OPs.

bats-evaluate --model=runs/train_tiny/model.keras --dataset=cifar10_mini \
    --split=test --output=runs/train_tiny/eval.json

With --part it evaluates one part of the fixed partition of --split that every script shares
(bats_tf/data.py): --part=val is what training validated on without --val_split, and holds
no image that searched the cell or trained the network. --max_examples evaluates the first N
examples of that part (or of --split) in the partition's fixed order, the same N as a
training run's --max_val_examples.

bats-evaluate --model=runs/train/model.keras --dataset=folder \
    --data_dir=../shared/data/cifar10-jpeg --split=train --part=val --max_examples=500

The split's labels are matched to the model's outputs by class name (``classes.json`` beside
the model): a split may lack some of the model's classes; one with a class the model does not
know is refused, naming it.
"""

import json
import os

from absl import flags

from bats_tf.commands import common
from bats_tf.datasets import PARTS

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Saved .keras model (from scripts/train.py).")
common.define_data_flags("test", "Dataset evaluated on (--split)")
flags.DEFINE_enum(
    "part", None, list(PARTS), "Evaluate this part of --split's partition; unset: all of it."
)
flags.DEFINE_integer(
    "max_examples", None, "Evaluate the first N examples of --part (or of --split), fixed order."
)
flags.DEFINE_integer("batch_size", 100, "Batch size.")
flags.DEFINE_string("output", None, "JSON file to write the figures to.")
common.define_bad_images_flag()


def main(argv):
    common.check_no_arguments(argv)
    f = FLAGS
    common.check_model_flag()
    common.check_at_least(1, "batch_size")
    common.check_data_flags()
    common.check(
        f.max_examples is None or f.max_examples >= 1,
        f"--max_examples={f.max_examples}: must be at least 1",
    )
    if f.output:
        common.check(
            not os.path.isdir(f.output), f"--output={f.output}: a folder; give a .json file name"
        )
        common.check(
            not os.path.exists(f.output) or not os.path.samefile(f.output, f.model),
            f"--output={f.output}: the model file itself; give another file name",
        )
        common.check_writable_dir(os.path.dirname(os.path.abspath(f.output)), "--output")
    common.start_tensorflow()
    common.use_bad_images_flag()
    from bats_tf import data, metrics, training
    from bats_tf.io_utils import atomic_write_json

    raw, info = data.load_part(f.dataset, f.split, f.data_dir, f.part, f.max_examples)
    try:
        model = training.load_model(f.model)
    except ValueError as e:
        raise common.UsageError(f"--model: {e}") from None
    shape = model.input_shape
    common.check(
        shape[1] == info.image_size,
        f"--model={f.model}: takes {shape[1]}px images; {info.name} has {info.image_size}px",
    )
    raw = data.relabel(raw, _class_mapping(model, info))
    ds = data.pipeline(raw, info, f.batch_size, training=False)
    result = {**metrics.evaluate(model, ds), **metrics.complexity(model)}
    result.update(model=os.path.abspath(f.model), dataset=info.name, split=f.split, part=f.part)
    print(json.dumps(result, indent=2))
    if f.output:
        atomic_write_json(f.output, result)


def _class_mapping(model, info):
    """The split's labels as the model's outputs, by class name (None: the same classes)."""
    from bats_tf import data, model_files

    outputs = model.output_shape[-1]
    known = model_files.class_names_or_assumed(FLAGS.model, outputs, info.class_names, "--model")
    try:
        return data.class_mapping(known, info.class_names)
    except ValueError as e:
        raise common.UsageError(f"--split={FLAGS.split}: {e}") from None


def run() -> None:
    common.start(main)


if __name__ == "__main__":
    run()
