"""Training of the final network: two stages, knowledge distillation, resumable ``model.fit``.

Stage 1 trains binary activations with real weights, stage 2 the fully binary network
initialised from stage 1 (same layers, so latent weights carry over by layer name). A
:class:`Distiller` wraps the network: its ``train_step`` adds to the cross-entropy a KL term
towards a real-valued teacher (a saved model, or ``teacher="self"``: the same genotype
trained real-valued first) and the auxiliary head's loss.

Everything is resumable: each stage (and the teacher) lives in its own folder of
``output_dir`` with its checkpoints in ``backup`` (:mod:`bats_tf.resumable_fit`); a finished
stage leaves ``model.keras`` and is skipped on a rerun, so rerunning the same command
continues where it stopped.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import dataclasses
import json
import os
import time

import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams

from bats_tf import data, io_utils, metrics, network
from bats_tf.checkpoints import RunCheckpoints
from bats_tf.determinism import enable_determinism
from bats_tf.distiller import Distiller
from bats_tf.errors import ConfigError
from bats_tf.io_utils import atomic_write_json, tensorboard_hparams
from bats_tf.model_files import load_model, load_teacher, save_model
from bats_tf.optimizers import make_optimizer
from bats_tf.resumable_fit import resumable_fit, resume_position
from bats_tf.strategy import make_strategy, task_of
from bats_tf.train_config import CONFIG_FILE, TRAIN_PARTS, TrainConfig
from bats_tf.training_logs import JsonHistory, LearningRateLogger, read_history, write_larq_summary
from bats_tf.weight_transfer import copy_weights

STAGE_PRECISION = {1: ("binary", "real"), 2: ("binary", "binary")}  # (activations, weights)
MODEL_FILE = "model.keras"
BACKUP = "backup"  # a stage's checkpoints while it trains (removed when it is done)
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.json"
SUMMARY_FILE = "model_summary.txt"  # lq.models.summary of a stage's network
_RESUMABLE = ("stages", "strategy", "verbose")  # may differ between runs in one output_dir


class OutputDirError(ConfigError):
    """The output folder holds something else than this run."""

    def __init__(self, output_dir: str, message: str):
        super().__init__("output_dir", message, output_dir)


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
            examples_param="max_val_examples",
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
        part_param="train_part",
    )
    val, _ = data.load_part(
        config.dataset,
        config.split,
        config.data_dir,
        "val",
        config.max_val_examples,
        examples_param="max_val_examples",
    )
    return train, val, info


# Stages.


def stage_checkpoints(folder: str, objects: dict | None = None) -> RunCheckpoints:
    """A stage's checkpoints in ``folder/backup`` (this worker's own, on a cluster)."""
    task, _, chief = task_of(tf.distribute.get_strategy())
    return RunCheckpoints(objects or {}, folder, BACKUP, None if chief else task)


def fit(student, teacher, config: TrainConfig, folder, train_raw, val_raw, info, callbacks=()):
    """Trains ``student`` (through a :class:`Distiller`) in ``folder``, resuming its backup.

    Call under the strategy's scope. Returns the history (a list of per-epoch logs).

    # Arguments
        student: the network trained.
        teacher: a frozen model it distils from, or None.
        config: the training's settings (optimizer, schedule, epochs, batch size, losses).
        folder: the stage's folder (backup, logs, history, weight files).
        train_raw, val_raw: raw examples of training and validation.
        info: their dataset's info.
        callbacks: more Keras callbacks.
    """
    io_utils.makedirs(folder)
    steps = int(train_raw.cardinality()) // config.batch_size
    if steps < 1:
        raise ConfigError(
            "batch_size",
            f"larger than the training data ({int(train_raw.cardinality())} examples)",
            config.batch_size,
        )
    distiller = Distiller(
        student,
        teacher,
        config.kd_weight if teacher is not None else 0.0,
        config.kd_temperature,
        config.auxiliary_weight,
    )
    optimizer = make_optimizer(config, steps * config.epochs, student)
    distiller.compile(optimizer=optimizer)
    checkpoints = stage_checkpoints(folder, dict(student=student, optimizer=optimizer))
    history = os.path.join(folder, HISTORY_FILE)
    ckpt = os.path.join(folder, "checkpoints")
    default_callbacks = [
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
    if resume_position(checkpoints, steps)[0] < config.epochs:
        logging.info("%s: training to epoch %d", folder, config.epochs)
        write_larq_summary(student, os.path.join(folder, SUMMARY_FILE), echo=config.verbose > 0)

    def epoch_data(epoch, skip):
        return data.pipeline(train_raw, info, config.batch_size, True, config.seed, epoch, skip)

    resumable_fit(
        distiller,
        epoch_data,
        config.epochs,
        steps,
        checkpoints,
        default_callbacks + list(callbacks),
        validation_data=data.pipeline(val_raw, info, config.batch_size, training=False),
        verbose=config.verbose,
    )
    return read_history(history)


def train_or_load(build, config, folder, train_raw, val_raw, info, teacher=None, init=None, cb=()):
    """A finished stage's model from ``folder``, or a new one built, initialised and trained.

    ``build()`` makes the network, ``init`` (a model) gives its initial weights, ``cb`` are
    more callbacks; the other arguments are :func:`fit`'s.
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
    stage_checkpoints(folder).remove()
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
        # The deployed network: no training-only layers, and float32 for LCE.
        extra = dict(drop_path=0.0, auxiliary=False, precision="float32") if deploy else {}
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
