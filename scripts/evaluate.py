"""Evaluates a trained model: top-1, top-5, loss, params, BOPs, FLOPs and OPs.

python scripts/evaluate.py --model=runs/train_tiny/model.keras --dataset=cifar10_mini \
    --split=test --output=runs/train_tiny/eval.json

With --holdout (and the training run's --max_examples and --seed) it evaluates the part of
--split that training held out.
"""

import bats_tf  # noqa: F401

# isort: split
import json
import os

from absl import app, flags

from bats_tf import cli

FLAGS = flags.FLAGS
D = flags
D.DEFINE_string("model", None, "Saved .keras model (from scripts/train.py).")
cli.define_data_flags("test", "Dataset evaluated on (--split)")
D.DEFINE_float("holdout", None, "Evaluate the held-out share of --split, as training made it.")
D.DEFINE_integer("max_examples", None, "With --holdout: the training run's --max_examples.")
D.DEFINE_integer("seed", 0, "With --holdout: the training run's --seed.")
D.DEFINE_integer("batch_size", 100, "Batch size.")
D.DEFINE_string("output", None, "JSON file to write the figures to.")


def main(argv):
    cli.check_no_arguments(argv)
    f = FLAGS
    cli.check_model_flag()
    cli.check_at_least(1, "batch_size")
    cli.check_data_flags()
    cli.check(f.holdout is not None or f.max_examples is None, "--max_examples needs --holdout")
    if f.output:
        cli.check_writable_dir(os.path.dirname(os.path.abspath(f.output)), "--output")
    from bats_tf import data, metrics, training
    from bats_tf.io_utils import atomic_write_json

    if f.holdout is None:
        raw, info = data.load(f.dataset, f.split, f.data_dir)
    else:
        _, raw, info = data.holdout_split(
            f.dataset, f.data_dir, f.split, f.holdout, f.max_examples, f.seed
        )
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
    result.update(model=os.path.abspath(f.model), dataset=info.name, split=f.split)
    print(json.dumps(result, indent=2))
    if f.output:
        atomic_write_json(f.output, result)


if __name__ == "__main__":
    app.run(cli.run(main), flags_parser=cli.parse_flags)
