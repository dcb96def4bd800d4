"""Evaluates a trained model: top-1, top-5, loss, params, BOPs, FLOPs and OPs.

python scripts/evaluate.py --model=runs/train_tiny/model.keras --dataset=cifar10_mini \
    --split=test --output=runs/train_tiny/eval.json

With --part it evaluates one part of the fixed partition of --split that every script shares
(bats_tf/data.py): --part=val is what training validated on without --val_split, and holds
no image that searched the cell or trained the network. --max_examples evaluates the first N
examples of that part (or of --split) in the partition's fixed order, the same N as a
training run's --max_val_examples.

python scripts/evaluate.py --model=runs/train/model.keras --dataset=folder \
    --data_dir=../shared/data/cifar10-jpeg --split=train --part=val --max_examples=500
"""

import bats_tf  # noqa: F401

# isort: split
import json
import os

from absl import app, flags

from bats_tf import cli

# bats_tf.data.PARTS, known before TensorFlow loads
PARTS = ("search_weights", "search_arch", "final_train", "val", "train")

FLAGS = flags.FLAGS
D = flags
D.DEFINE_string("model", None, "Saved .keras model (from scripts/train.py).")
cli.define_data_flags("test", "Dataset evaluated on (--split)")
D.DEFINE_enum(
    "part", None, list(PARTS), "Evaluate this part of --split's partition; unset: all of it."
)
D.DEFINE_integer(
    "max_examples", None, "Evaluate the first N examples of --part (or of --split), fixed order."
)
D.DEFINE_integer("batch_size", 100, "Batch size.")
D.DEFINE_string("output", None, "JSON file to write the figures to.")


def main(argv):
    cli.check_no_arguments(argv)
    f = FLAGS
    cli.check_model_flag()
    cli.check_at_least(1, "batch_size")
    cli.check_data_flags()
    cli.check(
        f.max_examples is None or f.max_examples >= 1,
        f"--max_examples={f.max_examples}: must be at least 1",
    )
    if f.output:
        cli.check_writable_dir(os.path.dirname(os.path.abspath(f.output)), "--output")
    from bats_tf import data, metrics, training
    from bats_tf.io_utils import atomic_write_json

    raw, info = data.load_part(f.dataset, f.split, f.data_dir, f.part, f.max_examples)
    try:
        model = training.load_model(f.model)
    except ValueError as e:
        raise cli.UsageError(f"--model: {e}") from None
    shape = model.input_shape
    cli.check(
        shape[1] == info.image_size and model.output_shape[-1] == info.num_classes,
        f"--model={f.model}: takes {shape[1]}px images and gives {model.output_shape[-1]} "
        f"classes; {info.name} has {info.image_size}px images and {info.num_classes} classes",
    )
    ds = data.pipeline(raw, info, f.batch_size, training=False)
    result = {**metrics.evaluate(model, ds), **metrics.complexity(model)}
    result.update(model=os.path.abspath(f.model), dataset=info.name, split=f.split, part=f.part)
    print(json.dumps(result, indent=2))
    if f.output:
        atomic_write_json(f.output, result)


if __name__ == "__main__":
    app.run(cli.run(main), flags_parser=cli.parse_flags)
