"""Training of the final network: two stages, knowledge distillation, resumable ``model.fit``.

Stage 1 trains binary activations with real weights, stage 2 the fully binary network
initialised from stage 1 (same layers, so latent weights carry over by layer name). A
:class:`Distiller` wraps the network: its ``train_step`` adds to the cross-entropy a KL term
towards a real-valued teacher (a saved model, or ``teacher="self"``: the same genotype
trained real-valued first) and the auxiliary head's loss.

Everything is resumable: each stage (and the teacher) lives in its own folder of
``output_dir`` with a ``BackupAndRestore`` backup; a finished stage leaves ``model.keras``
and is skipped on a rerun, so rerunning the same command continues where it stopped.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import dataclasses
import json
import os
import time

import larq as lq
import numpy as np
import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams

from bats_tf import compat, data, io_utils, metrics, network
from bats_tf.determinism import enable_determinism
from bats_tf.errors import ConfigError, Interrupted
from bats_tf.io_utils import atomic_write_json, atomic_write_text, tensorboard_hparams
from bats_tf.losses import cross_entropy, distillation_loss
from bats_tf.model_files import load_model, load_teacher, save_model
from bats_tf.signals import InterruptFlag
from bats_tf.strategy import make_strategy
from bats_tf.train_config import (
    CONFIG_FILE,
    LR_SCHEDULES,
    OPTIMIZERS,
    TRAIN_PARTS,
    TrainConfig,
)

STAGE_PRECISION = {1: ("binary", "real"), 2: ("binary", "binary")}  # (activations, weights)
MODEL_FILE = "model.keras"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
SUMMARY_FILE = "model_summary.txt"  # lq.models.summary of a stage's network
_RESUMABLE = ("stages", "strategy", "verbose")  # may differ between runs in one output_dir


class OutputDirError(ConfigError):
    """The output folder holds something else than this run."""

    def __init__(self, output_dir: str, message: str):
        super().__init__("output_dir", message, output_dir)


class Distiller(tf.keras.Model):
    """Trains ``student`` on ``(1 - w) * CE + w * T^2 * KL(teacher_T || student_T)``.

    Without a teacher (or with ``kd_weight=0``) the loss is plain cross-entropy. A student
    with an auxiliary head (outputs ``[logits, aux]``) adds ``aux_weight * CE(aux)``.
    Validation reports cross-entropy. Metrics: loss, top1, top5.
    """

    def __init__(
        self, student, teacher=None, kd_weight=0.0, temperature=1.0, aux_weight=0.0, **kwargs
    ):
        super().__init__(**kwargs)
        self.student, self.teacher = student, teacher
        if teacher is not None:
            teacher.trainable = False
        self.kd_weight, self.temperature, self.aux_weight = kd_weight, temperature, aux_weight
        classes = int(network.inference_model(student).outputs[0].shape[-1])
        self.loss_tracker = tf.keras.metrics.Mean(name="loss")
        self.top1 = tf.keras.metrics.SparseCategoricalAccuracy(name="top1")
        self.top5 = tf.keras.metrics.SparseTopKCategoricalAccuracy(k=min(5, classes), name="top5")

    @property
    def metrics(self):
        return [self.loss_tracker, self.top1, self.top5]

    def get_config(self):
        return dict(
            kd_weight=self.kd_weight, temperature=self.temperature, aux_weight=self.aux_weight
        )

    def _outputs(self, x, training):
        out = self.student(x, training=training)
        return (out[0], out[1]) if isinstance(out, (list, tuple)) else (out, None)

    def call(self, x, training=False):
        return self._outputs(x, training)[0]

    def per_example_loss(self, x, y, training=True):
        logits, aux = self._outputs(x, training)
        teacher_logits = None
        if self.teacher is not None and self.kd_weight > 0:
            teacher_logits = self.teacher(x, training=False)
        loss = distillation_loss(y, logits, teacher_logits, self.kd_weight, self.temperature)
        if aux is not None and self.aux_weight > 0:
            loss += self.aux_weight * cross_entropy(y, aux)
        return logits, loss

    def train_step(self, batch):
        x, y = batch
        variables = self.student.trainable_variables
        with tf.GradientTape() as tape:
            logits, per_example = self.per_example_loss(x, y, training=True)
            loss = tf.nn.compute_average_loss(per_example)
            if self.student.losses:
                loss += tf.nn.scale_regularization_loss(tf.add_n(self.student.losses))
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update(y, logits, per_example)

    def test_step(self, batch):
        x, y = batch
        logits = self(x, training=False)
        return self._update(y, logits, cross_entropy(y, logits))

    def _update(self, y, logits, per_example):
        self.loss_tracker.update_state(per_example)
        self.top1.update_state(y, logits)
        self.top5.update_state(y, logits)
        return {m.name: m.result() for m in self.metrics}


def latent_binary_kernels(model) -> list:
    """Latent weights of binary kernels (clipped by ``WeightClip``; no weight decay)."""
    return [
        v
        for v in model.trainable_variables
        if isinstance(getattr(v, "constraint", None), lq.constraints.WeightClip)
    ]


def make_schedule(name: str, lr: float, total_steps: int):
    """A learning-rate schedule over ``total_steps``: cosine to 0, step (x0.1 at 50%, 75%)."""
    if name == "cosine":
        return tf.keras.optimizers.schedules.CosineDecay(lr, max(total_steps, 1))
    if name == "step":
        bounds = [max(int(total_steps * f), 1) for f in (0.5, 0.75)]
        return tf.keras.optimizers.schedules.PiecewiseConstantDecay(
            [bounds[0], max(bounds[1], bounds[0] + 1)], [lr, lr * 0.1, lr * 0.01]
        )
    if name == "constant":
        return lr
    raise ConfigError("schedule", f"expected one of {', '.join(LR_SCHEDULES)}", name)


def make_optimizer(config: TrainConfig, total_steps: int, model):
    """Adam or SGD with the schedule; decoupled weight decay on all but latent binary kernels."""
    lr = make_schedule(config.schedule, config.lr, total_steps)
    kw = dict(
        weight_decay=config.weight_decay or None,
        global_clipnorm=config.grad_clip or None,
    )
    if config.optimizer == "adam":
        opt = tf.keras.optimizers.Adam(lr, **kw)
    elif config.optimizer == "sgd":
        opt = tf.keras.optimizers.SGD(lr, momentum=config.momentum, **kw)
    else:
        raise ConfigError("optimizer", f"expected one of {OPTIMIZERS}", config.optimizer)
    if config.weight_decay:
        opt.exclude_from_weight_decay(var_list=latent_binary_kernels(model))
    return opt


def copy_weights(source, target) -> None:
    """Copies weights layer by layer, matched by name (stage 1 -> stage 2)."""
    by_name = {layer.name: layer for layer in network.flat_layers(source)}
    for layer in network.flat_layers(target):
        if not layer.weights:
            continue
        if layer.name not in by_name:
            raise ValueError(f"layer {layer.name} of {target.name} is not in {source.name}")
        layer.set_weights(by_name[layer.name].get_weights())
    fold_kernel_scale(source, target)


def fold_kernel_scale(source, target) -> None:
    """Keeps a real -> binary kernel's output scale: ``w ~ mean|w| * sign(w)`` (XNOR-Net).

    For each conv whose kernel is real in ``source`` and binary in ``target`` and that is
    followed by a :class:`~bats_tf.ops.ChannelScale` (``<op>_conv`` -> ``<op>_scale``), the
    per-output-channel ``mean|w|`` is multiplied into that scale.
    """
    src = {layer.name: layer for layer in network.flat_layers(source)}
    tgt = {layer.name: layer for layer in network.flat_layers(target)}
    for name, layer in tgt.items():
        scale = tgt.get(name[: -len("_conv")] + "_scale") if name.endswith("_conv") else None
        if scale is None or not network.is_binary(network.kernel_quantizer(layer)):
            continue
        if network.is_binary(network.kernel_quantizer(src[name])):
            continue
        kernel = src[name].kernel.numpy()
        alpha = np.abs(kernel).mean(axis=tuple(range(kernel.ndim - 1)))
        scale.scale.assign(scale.scale * alpha)


# Data.


def datasets(config: TrainConfig):
    """(train raw, validation raw, info) by the partition of ``bats_tf.data``.

    Without ``val_split``: the ``train_part`` of ``split`` and its ``val`` part. With it: all
    of ``split`` and all of ``val_split``. ``max_examples`` and ``max_val_examples`` take the
    first examples of each in the partition's fixed order.
    """
    if config.val_split:
        if config.train_part != "train":
            raise ConfigError(
                "train_part",
                "a part of split's partition; with val_split, training uses all of split",
                config.train_part,
            )
        train, info = data.load_part(
            config.dataset, config.split, config.data_dir, None, config.max_examples
        )
        val, val_info = data.load_part(
            config.dataset,
            config.val_split,
            config.data_dir,
            None,
            config.max_val_examples,
            examples_flag="max_val_examples",
        )
        if val_info.class_names != info.class_names:
            raise ConfigError(
                "val_split", f"its classes differ from split={config.split}", config.val_split
            )
        return train, val, info
    if config.train_part not in TRAIN_PARTS:
        raise ConfigError(
            "train_part", f"must be one of {', '.join(TRAIN_PARTS)}", config.train_part
        )
    train, info = data.load_part(
        config.dataset,
        config.split,
        config.data_dir,
        config.train_part,
        config.max_examples,
        part_flag="train_part",
    )
    val, _ = data.load_part(
        config.dataset,
        config.split,
        config.data_dir,
        "val",
        config.max_val_examples,
        examples_flag="max_val_examples",
    )
    return train, val, info


def epochs_data(raw, info, config: TrainConfig, start: int):
    """Training batches of epochs ``start..epochs-1`` in a row, each with its own order."""
    start = min(start, config.epochs - 1)
    ds = None
    for epoch in range(start, config.epochs):
        d = data.pipeline(
            raw, info, config.batch_size, training=True, seed=config.seed, epoch=epoch
        )
        ds = d if ds is None else ds.concatenate(d)
    return ds


def backup_position(backup_dir: str, steps: int) -> tuple[int, int]:
    """(epoch, step) a :class:`Backup` resumes at ((0, 0) without a backup)."""
    path = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if path is None:
        return 0, 0
    epoch = int(tf.train.load_variable(path, "ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(tf.train.load_variable(path, "ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    return (epoch + 1, 0) if batch >= steps - 1 else (epoch, batch + 1)


class Backup(tf.keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` at every epoch end and, after SIGINT or SIGTERM, at the batch
    that was running (at the epoch's end if that was its last); then the run stops with
    :class:`~bats_tf.errors.Interrupted`.

    Batch-level restore (``save_freq`` an integer, never reached by counting) makes Keras
    resume a backup taken mid-epoch at the next batch; :func:`fit` skips the batches seen.
    """

    def __init__(self, backup_dir: str, steps: int):
        super().__init__(backup_dir, save_freq=2**62, delete_checkpoint=False)
        self.steps = steps
        self.flag = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self.flag = InterruptFlag()

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.flag.signum is not None:
            self._stop(f"backup at the end of epoch {epoch}")

    def on_train_batch_end(self, batch, logs=None):
        super().on_train_batch_end(batch, logs)
        if self.flag.signum is not None and batch < self.steps - 1:
            self._save(compat.backup_epoch(self), batch)
            self._stop(f"backup at epoch {compat.backup_epoch(self) + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        self._save(epoch, self.steps - 1)

    def on_train_end(self, logs=None):
        signum = self.flag.signum if self.flag is not None else None
        super().on_train_end(logs)
        if signum is not None:
            self._stop(f"backup at the end of epoch {compat.backup_epoch(self) + 1}")

    def _save(self, epoch: int, batch: int):
        compat.back_up(self, epoch, batch)

    def _stop(self, where: str):
        signum, self.flag.signum = self.flag.signum, None
        self.flag.restore()
        raise Interrupted(f"{where}; rerun the same command to continue", signum)


class LearningRateLogger(tf.keras.callbacks.Callback):
    """Adds the learning rate and the epoch's wall time to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, tf.keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        logs["learning_rate"] = float(tf.keras.backend.get_value(lr))  # Keras's own name
        logs["seconds"] = time.time() - self._start


class JsonHistory(tf.keras.callbacks.Callback):
    """Per-epoch logs as a JSON list; on resume, epochs at or after the restart are replaced."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        self.history = read_history(self.path)

    def on_epoch_end(self, epoch, logs=None):
        self.history = [h for h in self.history if h["epoch"] < epoch]
        self.history.append({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}})
        atomic_write_json(self.path, self.history)


def write_larq_summary(model, path: str, echo: bool = True) -> str:
    """``lq.models.summary`` (bit-widths, memory, binarized MACs) to ``path``, and stdout."""
    lines = []
    lq.models.summary(model, print_fn=lines.append)
    text = "\n".join(lines) + "\n"
    atomic_write_text(path, text)
    if echo:
        print(text, end="", flush=True)
    return text


def read_history(path: str) -> list[dict]:
    return json.loads(io_utils.read_text(path)) if io_utils.exists(path) else []


# Stages.


def fit(student, teacher, config: TrainConfig, folder, train_raw, val_raw, info, callbacks=()):
    """Trains ``student`` (through a :class:`Distiller`) in ``folder``, resuming its backup.

    Call under the strategy's scope. Returns the history (a list of per-epoch logs).
    """
    io_utils.makedirs(folder)
    steps = int(train_raw.cardinality()) // config.batch_size
    if steps < 1:
        raise ConfigError(
            "batch_size",
            f"larger than the training data ({int(train_raw.cardinality())} examples)",
            config.batch_size,
        )
    backup = os.path.join(folder, "backup")
    start, skip = backup_position(backup, steps)
    distiller = Distiller(
        student,
        teacher,
        config.kd_weight if teacher is not None else 0.0,
        config.kd_temperature,
        config.auxiliary_weight,
    )
    distiller.compile(optimizer=make_optimizer(config, steps * config.epochs, student))
    distiller(tf.zeros((1, info.image_size, info.image_size, 3)))  # built, for BackupAndRestore
    history = os.path.join(folder, HISTORY_FILE)
    ckpt = os.path.join(folder, "checkpoints")
    default_callbacks = [
        Backup(backup, steps),
        network.DropPathRamp(config.epochs),
        LearningRateLogger(),
        tf.keras.callbacks.ModelCheckpoint(
            os.path.join(ckpt, "last.weights.h5"), save_weights_only=True
        ),
        tf.keras.callbacks.ModelCheckpoint(
            os.path.join(ckpt, "best.weights.h5"),
            save_weights_only=True,
            monitor="val_top1",
            mode="max",
            save_best_only=True,
        ),
        tf.keras.callbacks.TensorBoard(
            os.path.join(folder, "logs"), write_graph=False, profile_batch=0
        ),
        hparams.KerasCallback(  # each stage its own trial
            os.path.join(folder, "logs"),
            tensorboard_hparams({**dataclasses.asdict(config), "stage": os.path.basename(folder)}),
        ),
        tf.keras.callbacks.CSVLogger(os.path.join(folder, "history.csv"), append=True),
        JsonHistory(history),
    ]
    if start < config.epochs:
        logging.info("%s: training epochs %d..%d", folder, start + 1, config.epochs)
        write_larq_summary(student, os.path.join(folder, SUMMARY_FILE), echo=config.verbose > 0)
    distiller.fit(
        epochs_data(train_raw, info, config, start).skip(skip),
        epochs=config.epochs,
        steps_per_epoch=steps,
        validation_data=data.pipeline(val_raw, info, config.batch_size, training=False),
        callbacks=default_callbacks + list(callbacks),
        verbose=config.verbose,
    )
    return read_history(history)


def train_or_load(build, config, folder, train_raw, val_raw, info, teacher=None, init=None, cb=()):
    """A finished stage's model from ``folder``, or a new one built, initialised and trained.

    ``build()`` makes the network, ``init`` (a model) gives its initial weights.
    """
    path = os.path.join(folder, MODEL_FILE)
    model = build()
    if io_utils.exists(path):
        logging.info("%s: finished before, loading it", path)
        copy_weights(load_model(path), model)
        return model
    if init is not None:
        copy_weights(init, model)
    fit(model, teacher, config, folder, train_raw, val_raw, info, cb)
    save_model(model, path)
    tf.io.gfile.rmtree(os.path.join(folder, "backup"))
    return model


def claim_output_dir(config: TrainConfig, output_dir: str) -> None:
    """Records the config in a new ``output_dir``, or checks it matches the one there."""
    path = os.path.join(output_dir, CONFIG_FILE)
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    if not io_utils.exists(path):
        if io_utils.isdir(output_dir) and io_utils.listdir(output_dir):
            raise OutputDirError(output_dir, "not empty and not a training run")
        atomic_write_json(path, wanted)
        return
    found = json.loads(io_utils.read_text(path))
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # settings added later
    found = {**json.loads(json.dumps(defaults)), **found}
    keys = set(wanted) | set(found)  # a setting since removed (e.g. holdout) differs too
    diff = sorted(k for k in keys if k not in _RESUMABLE and found.get(k) != wanted.get(k))
    if diff:
        raise OutputDirError(
            output_dir,
            f"holds a run with other settings ({', '.join(diff)}); use a new output_dir",
        )


@dataclasses.dataclass(frozen=True)
class Stage:
    """One phase of a training: the network it trains (precision of activations and
    weights), the teacher it distils from (an earlier stage's name, a model file, or None)
    and the stage whose weights it starts from. Its outputs go to ``<output_dir>/<name>``."""

    name: str
    activations: str
    weights: str
    teacher: str | None = None
    init: str | None = None


def stage_plan(config: TrainConfig) -> list[Stage]:
    """The stages a config runs, in order (as larq-zoo declares multi-stage training).

    ``teacher="self"`` first trains the real-valued network as the teacher. Stage 1 binarizes
    the activations, stage 2 the weights too, starting from stage 1 (trained in this run or
    found in ``<output_dir>/stage1``).
    """
    plan, teacher = [], config.teacher
    if config.teacher == "self":
        plan.append(Stage("teacher", "real", "real"))
        teacher = "teacher"
    for s in config.stages:
        activations, weights = STAGE_PRECISION[s]
        init = "stage1" if s == 2 else None
        plan.append(Stage(f"stage{s}", activations, weights, teacher, init))
    return plan


def train(config: TrainConfig, output_dir: str, callbacks=()) -> dict:
    """Runs (or resumes) the configured stages; writes ``model.keras`` and ``metrics.json``."""
    began = time.time()
    genotype = network.resolve_genotype(config.genotype)
    train_raw, val_raw, info = datasets(config)
    claim_output_dir(config, output_dir)
    if config.deterministic:
        enable_determinism()
    tf.keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)
    kwargs = config.network_kwargs()

    def builder(activations, weights, strict=False, deploy=False):
        extra = dict(drop_path=0.0, auxiliary=False) if deploy else {}
        return lambda: network.build_network(
            genotype,
            info.num_classes,
            info.image_size,
            activations=activations,
            weights=weights,
            strict_lce=strict,
            **{**kwargs, **extra},
        )

    plan = stage_plan(config)
    with strategy.scope():
        builder("binary", "binary", config.strict_lce)()  # fail early on an LCE mismatch
        models = {}
        for stage in plan:
            folder = os.path.join(output_dir, stage.name)
            teacher = None
            if stage.teacher in models:
                teacher = network.inference_model(models[stage.teacher])
                teacher.trainable = False
            elif stage.teacher:
                teacher = load_teacher(stage.teacher, info)
            init = models.get(stage.init)
            earlier = os.path.join(output_dir, str(stage.init), MODEL_FILE)
            if stage.init and init is None and io_utils.exists(earlier):
                logging.info("%s starts from %s", stage.name, earlier)
                init = load_model(earlier)
            models[stage.name] = train_or_load(
                builder(stage.activations, stage.weights),
                config,
                folder,
                train_raw,
                val_raw,
                info,
                teacher,
                init=init,
                cb=callbacks,
            )
        last = plan[-1]
        final = builder(last.activations, last.weights, deploy=True)()
        copy_weights(models[last.name], final)  # without training-only layers (drop-path, aux)
    save_model(final, os.path.join(output_dir, MODEL_FILE))
    write_larq_summary(final, os.path.join(output_dir, SUMMARY_FILE), echo=False)
    val = data.pipeline(val_raw, info, config.batch_size, training=False)
    histories = {
        s: read_history(os.path.join(output_dir, f"stage{s}", HISTORY_FILE)) for s in config.stages
    }
    result = {
        **metrics.evaluate(final, val),
        **metrics.complexity(final),
        "epochs": sum(len(h) for h in histories.values()),
        "seconds": sum(e.get("seconds", 0.0) for h in histories.values() for e in h),
        "wall_seconds": time.time() - began,
        "stages": {
            str(s): {k: h[-1][k] for k in ("val_top1", "val_top5", "val_loss")} if h else {}
            for s, h in histories.items()
        },
        "genotype": str(genotype),
        "dataset": info.name,
        "val_examples": int(val_raw.cardinality()),
        "config": dataclasses.asdict(config),
    }
    atomic_write_json(os.path.join(output_dir, METRICS_FILE), result)
    return result
