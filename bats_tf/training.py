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

:func:`prepare` checks everything (genotype, data, classes, teacher, LCE, the output folder)
and writes nothing; :func:`train` writes only after it. Every model is saved with its class
names (``classes.json`` beside it).
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import dataclasses
import errno
import json
import os
import shutil
import time

import tensorflow as tf
from absl import logging
from tensorboard.plugins.hparams import api as hparams

from bats_tf import class_names, data, io_utils, metrics, network
from bats_tf.checkpoints import RunCheckpoints
from bats_tf.determinism import enable_determinism
from bats_tf.distiller import Distiller
from bats_tf.errors import ConfigError, WriteFailed
from bats_tf.genotype import Genotype
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
        try:  # a split with fewer classes is matched by name
            mapping = data.class_mapping(info.class_names, val_info.class_names)
        except ValueError as e:
            differ = f"its classes differ from split={config.split}'s: {e}"
            raise ConfigError("val_split", differ, config.val_split) from None
        return train, data.relabel(val, mapping), info
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
    steps = _steps(config, train_raw)
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
        WeightsFile(os.path.join(ckpt, "last.weights.h5"), save_weights_only=True),
        WeightsFile(
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


class WeightsFile(tf.keras.callbacks.ModelCheckpoint):
    """Keras's ``ModelCheckpoint`` of a ``.weights.h5`` file, written atomically (a temporary
    file, then a rename) once the disk is seen to have room for it.

    A failed write must end the run in one line (:class:`~bats_tf.errors.WriteFailed`) and
    keep the file written before; HDF5 rewrites a file in place, and can crash the process
    (segmentation fault) when a write of it fails for want of space.
    """

    def _save_model(self, epoch, batch, logs):
        target = self.filepath
        folder = os.path.dirname(os.path.abspath(target))
        if io_utils.is_remote(target):
            return super()._save_model(epoch, batch, logs)
        os.makedirs(folder, exist_ok=True)
        weights = self.model.weights
        needed = 1.2 * sum(int(w.numpy().nbytes) + 5 * 2**10 for w in weights) + 2**15
        if shutil.disk_usage(folder).free < needed:  # about the size HDF5 gives them
            raise WriteFailed(target, "ENOSPC", os.strerror(errno.ENOSPC))
        tmp = os.path.join(
            folder, f"{io_utils.TEMPORARY_PREFIX}{os.getpid()}-{os.path.basename(target)}"
        )
        self.filepath = tmp
        try:
            super()._save_model(epoch, batch, logs)
            if os.path.exists(tmp):  # (a save_best_only callback saves only on improvement)
                os.replace(tmp, target)
        except Exception as e:
            failure = io_utils.write_failure(e, target)
            if failure is None:
                raise
            raise failure from None
        finally:
            self.filepath = target
            if os.path.exists(tmp):
                os.unlink(tmp)


def _steps(config: TrainConfig, train_raw) -> int:
    """Batches per epoch; a batch larger than the data is refused."""
    steps = int(train_raw.cardinality()) // config.batch_size
    if steps < 1:
        raise ConfigError(
            "batch_size",
            f"larger than the training data ({int(train_raw.cardinality())} examples)",
            config.batch_size,
        )
    return steps


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
        stage_checkpoints(folder).remove()  # left by a run stopped right after the save
        return model
    if init is not None:
        copy_weights(init, model)
    fit(model, teacher, config, folder, train_raw, val_raw, info, cb)
    save_model(model, path, classes=info.class_names)
    stage_checkpoints(folder).remove()
    return model


def check_output_dir(config: TrainConfig, output_dir: str, locked: bool = False) -> bool:
    """``output_dir`` is new, empty, or holds this same run (True: resume); writes nothing.

    ``locked``: this process holds the folder's lock (else a run that does is refused).
    """
    from bats_tf import run_lock

    if not locked:
        run_lock.check_free(output_dir, "output_dir")
    path = os.path.join(output_dir, CONFIG_FILE)
    wanted = json.loads(json.dumps(dataclasses.asdict(config)))
    if not io_utils.exists(path):
        if io_utils.isdir(output_dir) and _own_files(io_utils.listdir(output_dir)):
            raise OutputDirError(output_dir, "not empty and not a training run")
        return False
    try:
        found = json.loads(io_utils.read_text(path))
    except (OSError, ValueError) as e:
        raise OutputDirError(output_dir, f"unreadable run config {path} ({e})") from None
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # settings added later
    found = {**json.loads(json.dumps(defaults)), **found}
    keys = set(wanted) | set(found)  # a setting since removed (e.g. holdout) differs too
    diff = sorted(k for k in keys if k not in _RESUMABLE and found.get(k) != wanted.get(k))
    if diff:
        raise OutputDirError(
            output_dir,
            f"holds a run with other settings ({', '.join(diff)}); use a new output_dir",
        )
    return True


def _own_files(names) -> list[str]:
    """The names in a folder but the lock file and temporary files of an interrupted write."""
    from bats_tf.run_lock import LOCK_FILE

    return [n for n in names if n != LOCK_FILE and not n.startswith(io_utils.TEMPORARY_PREFIX)]


def claim_output_dir(config: TrainConfig, output_dir: str, info=None) -> None:
    """Records the config (and the data's class names, with ``info``) in a new
    ``output_dir``, or checks it holds this same run."""
    resume = check_output_dir(config, output_dir, locked=True)
    if info is not None:
        class_names.check_run_data(output_dir, "output_dir", info.class_names, info.num_examples)
    if not resume:  # the config first: it claims the folder
        wanted = json.loads(json.dumps(dataclasses.asdict(config)))
        atomic_write_json(os.path.join(output_dir, CONFIG_FILE), wanted)
    if info is not None and class_names.read(output_dir) is None:  # also after a kill between
        class_names.write(
            output_dir, info.class_names, dataset=info.name, split=config.split,
            num_examples=info.num_examples,
        )  # fmt: skip


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


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What :func:`prepare` checked: the genotype and the data of a training."""

    genotype: Genotype
    train_raw: tf.data.Dataset
    val_raw: tf.data.Dataset
    info: data.DatasetInfo


def prepare(config: TrainConfig, output_dir: str) -> Prepared:
    """Checks everything a training takes in before it writes anything: the genotype, the
    data and its classes (against a run to resume), the batch size, the teacher, the LCE
    rule and the output folder. Raises a :class:`~bats_tf.errors.UsageError`; writes nothing.
    """
    genotype = network.resolve_genotype(config.genotype)
    if config.search_space:
        from bats_tf.search_space import primitives_of

        genotype.validate(primitives_of(config.search_space))
    if genotype.deployable and not config.deployable:
        raise ConfigError(
            "deployable",
            f"{config.genotype} was searched deployable: train it with deployable",
            False,
        )
    train_raw, val_raw, info = datasets(config)
    _steps(config, train_raw)
    check_output_dir(config, output_dir)
    class_names.check_run_data(output_dir, "output_dir", info.class_names, info.num_examples)
    if config.teacher not in (None, "self"):
        load_teacher(config.teacher, info)  # its image size and classes fit the data
    if config.strict_lce or config.deployable:
        with make_strategy(config.strategy).scope():
            _builder(genotype, info, config, "binary", "binary", strict=True)()
    return Prepared(genotype, train_raw, val_raw, info)


def _builder(genotype, info, config, activations, weights, strict=False, deploy=False):
    """A function building the network of a stage (``deploy``: without drop-path and the
    auxiliary head, in float32)."""
    extra = dict(drop_path=0.0, auxiliary=False, precision="float32") if deploy else {}
    return lambda: network.build_network(
        genotype,
        info.num_classes,
        info.image_size,
        activations=activations,
        weights=weights,
        strict_lce=strict,
        **{**config.network_kwargs(), **extra},
    )


def train(
    config: TrainConfig, output_dir: str, callbacks=(), prepared: Prepared | None = None
) -> dict:
    """Runs (or resumes) the configured stages; writes ``model.keras`` and ``metrics.json``.

    ``prepared`` is what :func:`prepare` returned for this config and folder (None: it is
    called here). Nothing is written before it has passed.
    """
    began = time.time()
    prepared = prepared or prepare(config, output_dir)
    genotype, info = prepared.genotype, prepared.info
    train_raw, val_raw = prepared.train_raw, prepared.val_raw
    claim_output_dir(config, output_dir, info)
    if config.deterministic:
        enable_determinism()
    tf.keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(config.strategy)

    def builder(activations, weights, strict=False, deploy=False):
        return _builder(genotype, info, config, activations, weights, strict, deploy)

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
    save_model(final, os.path.join(output_dir, MODEL_FILE), classes=info.class_names)
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
        "class_names": list(info.class_names),
        "val_examples": int(val_raw.cardinality()),
        "config": dataclasses.asdict(config),
    }
    atomic_write_json(os.path.join(output_dir, METRICS_FILE), result)
    return result
