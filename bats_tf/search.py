"""The BATS search loop: alternating architecture and weight steps with ``tf.GradientTape``.

Each step takes one batch of the architecture part and one of the weight part of the
training split: first the alphas move on the architecture batch (first-order DARTS, or
second-order with an unrolled virtual weight step: :mod:`bats_tf.architect`), then the
weights on the weight batch.
Everything a run needs to continue is in its checkpoint (weights, alphas, both optimizers,
global step, running sums); data order and augmentation derive from ``(seed, epoch)``, so a
resumed run repeats exactly what an uninterrupted one would have done.

Crash safety: outputs are written atomically, and an epoch's outputs before its checkpoint,
so whatever the moment a run is killed, the newest complete checkpoint (TensorFlow commits
one by atomically rewriting ``checkpoints/checkpoint``) and the outputs agree, and rerunning
the same command redoes only what was lost. SIGINT or SIGTERM stops the run between two
steps with a checkpoint; a second one stops it at once.

Under a ``tf.distribute`` strategy each replica takes its share of the global batch, losses
are scaled by the global batch size, gradients are summed over replicas, and batch
statistics are those of the global batch, so a step computes what it computes on one device.
With several workers, only the chief writes the outputs; every worker checkpoints (the
others into ``workers/<task>``) and all resume from the chief's checkpoints when they can
read them (a shared file system), else from their own.
"""

from __future__ import annotations

import dataclasses
import signal
import sys

import bats_tf  # noqa: F401

# isort: split
import numpy as np
import tensorflow as tf

from bats_tf import compat, cost, data, fused_kernels, supernet
from bats_tf.architect import Architect
from bats_tf.checkpoints import RunCheckpoints
from bats_tf.determinism import enable_determinism
from bats_tf.errors import ConfigError, Interrupted, RunError
from bats_tf.genotype import Genotype, parameter_free_counts
from bats_tf.losses import distillation_loss
from bats_tf.model_files import load_teacher
from bats_tf.optimizers import is_latent_binary
from bats_tf.search_config import CONFIG_FILE, SearchConfig
from bats_tf.search_log import SearchLog
from bats_tf.search_space import primitives_of
from bats_tf.signals import InterruptFlag
from bats_tf.strategy import make_strategy, task_of

__all__ = ["CONFIG_FILE", "RunError", "SearchConfig", "Searcher"]


# Share of the epochs that train weights only before the alphas move, when --warmup_epochs
# is not set (PC-DARTS: 15 of 50). With a quarter or less, untrained binary convs lost every
# normal-cell edge to pools and skips in the demo's search (README, "What the search does").
WARMUP_SHARE = 0.3


def warmup_epochs(cfg: SearchConfig) -> int:
    """Weight-only epochs of a search: ``cfg.warmup_epochs``, or WARMUP_SHARE of the epochs."""
    if cfg.warmup_epochs is not None:
        return cfg.warmup_epochs
    return int(round(WARMUP_SHARE * cfg.epochs))


# Graph optimizer passes that leave the search step's graph as it is or nearly (layout: no
# node changed; remapper: 2 of 31k) and took 8 of the 25 s spent optimizing it; the step runs
# as fast without them.
LEAN_GRAPPLER = {
    "layout_optimizer": False,
    "remapping": False,
    "dependency_optimization": False,
    "loop_optimization": False,
    "implementation_selector": False,
}


def use_lean_grappler() -> None:
    """Turns off :data:`LEAN_GRAPPLER`'s passes and the memory optimizer for the rest of this
    process (call it last: later optimizer or device-placement settings of ``tf.config``
    bring the memory optimizer back).

    The memory optimizer took 4-5 s of the paper search step's 17 s of graph optimization;
    without it the step runs as fast with as much memory. It has no public switch, so it is
    set in the eager context's function-call options (pinned TensorFlow version).
    """
    tf.config.optimizer.set_experimental_options(LEAN_GRAPPLER)
    compat.disable_memory_optimizer()


class Searcher:
    """Builds the supernet, data and optimizers of a :class:`SearchConfig` and runs it."""

    def __init__(self, cfg: SearchConfig, output_dir: str, log=print):
        self.cfg, self.out, self.log = cfg, output_dir, log
        self.strategy = make_strategy(cfg.strategy)  # first: multi-worker needs a fresh runtime
        self.replicas = self.strategy.num_replicas_in_sync
        if cfg.deterministic:
            enable_determinism()
        tf.keras.utils.set_random_seed(cfg.seed)
        self.w_data, self.a_data, self.info = data.search_splits(
            cfg.dataset, cfg.data_dir, cfg.split, cfg.max_examples
        )
        self.steps_per_epoch = min(len(self.w_data), len(self.a_data)) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise ConfigError(
                "batch_size",
                f"larger than each data part ({min(len(self.w_data), len(self.a_data))} examples)",
                cfg.batch_size,
            )
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.primitives = primitives_of(cfg.search_space)
        if cfg.order == "second" and self.replicas > 1:
            raise RunError("order=second runs on one device only (use order=first)")
        self.task, self.workers, self.chief = task_of(self.strategy)
        fused = cfg.fused and supernet.can_fuse(cfg.search_space)
        with self.strategy.scope():
            self.model = supernet.build_supernet(
                cfg.search_space,
                self.info.num_classes,
                self.info.image_size,
                cfg.init_channels,
                cfg.layers,
                cfg.nodes,
                op_config=cfg.op_config(),
                deployable=cfg.deployable,
                fused=fused,
                fused_kernels=fused_kernels.resolve(cfg.fused_kernels, log) if fused else "tf",
            )
            if self.replicas > 1:
                _synchronize_batch_norm(self.model)
            self.arch = supernet.Architecture(
                cfg.search_space, cfg.nodes, cfg.seed, cfg.temperature
            )
            self.w_schedule = tf.keras.optimizers.schedules.CosineDecay(
                cfg.w_lr, max(self.total_steps, 1), alpha=cfg.w_lr_min / cfg.w_lr
            )
            self.w_opt = tf.keras.optimizers.SGD(self.w_schedule, momentum=cfg.w_momentum)
            self.a_opt = tf.keras.optimizers.Adam(cfg.a_lr, beta_1=cfg.a_beta1, beta_2=cfg.a_beta2)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            # Running sums of the current epoch: w_loss, w_correct, a_loss, a_correct, examples.
            self.sums = tf.Variable(tf.zeros(5, tf.float64), trainable=False, name="epoch_sums")
        self.teacher = load_teacher(cfg.teacher, self.info) if cfg.teacher else None
        self.w_vars = self.model.trainable_variables
        with self.strategy.scope():  # slots exist before tracing and before a restore
            self.w_opt.build(self.w_vars)
            self.a_opt.build(self.arch.alphas)
        self.decay = [0.0 if is_latent_binary(v) else cfg.w_weight_decay for v in self.w_vars]
        self.checkpoints = RunCheckpoints(
            dict(
                model=self.model,
                arch=self.arch,
                w_opt=self.w_opt,
                a_opt=self.a_opt,
                step=self.step,
                sums=self.sums,
            ),
            output_dir,
            task=None if self.chief else self.task,
        )
        # The compiled step, ``search_step(batch, search_arch, stop)`` -> summed (w_loss, w_correct,
        # a_loss, a_correct, stop requests); ``batch`` comes from :meth:`epoch_data`. No
        # autograph: the step branches on Python values only, and tracing takes half as long.
        self.search_step = tf.function(self._distributed_step, autograph=False)
        # One device: forward and backward traced once for every step kind. Several
        # replicas: inline, as a nested tf.function cannot hold their synchronized BN.
        self._grads_fn = self._loss_and_grads
        if self.replicas == 1:
            self._grads_fn = tf.function(self._loss_and_grads, autograph=False)
        self.architect = Architect(
            self.arch,
            self.a_opt,
            cfg.a_weight_decay,
            self._grads_fn,
            self._sum_replicas,
            cost=cost_table(cfg, self.info.image_size),
            cost_weight=cfg.cost_weight,
            max_parameter_free=cfg.max_parameter_free,
            deployable=cfg.deployable,
        )

    @property
    def global_step(self) -> int:
        return int(self.step.numpy())

    # ----------------------------------------------------------------- steps (per replica)

    def _loss(self, images, labels, logits):
        cfg = self.cfg
        t_logits = self.teacher(images, training=False) if self.teacher is not None else None
        per_example = distillation_loss(labels, logits, t_logits, cfg.kd_weight, cfg.kd_temperature)
        return tf.nn.compute_average_loss(per_example, global_batch_size=cfg.batch_size)

    def _forward(self, images, labels):
        logits = self.model([images, *self.arch.mixing_weights()], training=True)
        loss = self._loss(images, labels, logits)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32))
        return loss, correct

    def _sum_replicas(self, grads):
        if self.replicas == 1:
            return grads
        return tf.distribute.get_replica_context().all_reduce("sum", grads)

    def _loss_and_grads(self, images, labels):
        """Loss, correct count and the gradients of the weights and of the alphas.

        Every step calls it through ``self._grads_fn``, on one device a traced function, so
        the supernet's forward and backward pass are traced once, not once per step kind;
        TensorFlow inlines the calls and drops the gradients a call does not use.
        """
        with tf.GradientTape() as tape:
            loss, correct = self._forward(images, labels)
        w_grads, a_grads = tape.gradient(loss, [self.w_vars, self.arch.alphas])
        return loss, correct, w_grads, a_grads

    def _weight_grads(self, images, labels):
        loss, correct, grads, _ = self._grads_fn(images, labels)
        grads = self._sum_replicas(grads)
        grads = [g + d * v if d else g for g, v, d in zip(grads, self.w_vars, self.decay)]
        return grads, loss, correct

    def _weight_step(self, images, labels):
        grads, loss, correct = self._weight_grads(images, labels)
        grads, _ = tf.clip_by_global_norm(grads, self.cfg.grad_clip)
        self.w_opt.apply_gradients(zip(grads, self.w_vars), skip_gradients_aggregation=True)
        return loss, correct

    def architecture_step(self, w_batch, a_batch):
        """The alphas' step of the configured order; (loss, correct) of ``a_batch``."""
        if self.cfg.order == "first":
            return self.architect.step(*a_batch)
        # The rate of the weight step about to run (the optimizer's learning_rate holds the
        # previous step's until apply_gradients updates it).
        lr = tf.cast(self.w_schedule(self.w_opt.iterations), tf.float32)
        return self.architect.unrolled_step(w_batch, a_batch, self.w_vars, self._weight_grads, lr)

    def _replica_step(self, batch, search_arch, stop):
        w_batch, a_batch = batch
        a_loss = a_correct = tf.constant(0.0)
        if search_arch:
            a_loss, a_correct = self.architecture_step(w_batch, a_batch)
        w_loss, w_correct = self._weight_step(*w_batch)
        return tf.stack([w_loss, w_correct, a_loss, a_correct, stop])

    def _distributed_step(self, batch, search_arch, stop):
        """Sums over replicas of (w_loss, w_correct, a_loss, a_correct, stop requests).

        Requests to stop travel with the step, so every worker stops after the same step.
        """
        out = self.strategy.run(self._replica_step, args=(batch, search_arch, stop))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    # ------------------------------------------------------------------------------ loop

    def epoch_data(self, epoch: int, skip: int = 0):
        """An epoch's (weights batch, architecture batch) pairs from batch ``skip`` on."""
        cfg = self.cfg
        parts = [
            data.pipeline(ds, self.info, cfg.batch_size, True, cfg.seed + k, epoch, skip)
            for k, ds in enumerate((self.w_data, self.a_data))
        ]
        ds = tf.data.Dataset.zip(tuple(parts)).take(self.steps_per_epoch - skip)
        # Every worker builds the same global batches and keeps its replicas' share of each.
        options = tf.data.Options()
        policy = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = policy
        return self.strategy.experimental_distribute_dataset(ds.with_options(options))

    def restore(self) -> int:
        """Restores the latest checkpoint of the output folder; returns the global step."""
        latest = self.checkpoints.restore()
        if latest:
            self.log(f"resumed from {latest} (step {self.global_step})")
        if self.workers > 1:
            self._check_workers_agree()
        return self.global_step

    def _check_workers_agree(self):
        """All workers resume from the same step (else their weights would silently differ)."""
        step = tf.cast(self.step, tf.float64)
        per_replica = tf.function(lambda: self.strategy.run(lambda: tf.stack([step, step * step])))
        sums = self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica(), axis=None).numpy()
        if sums[0] ** 2 != self.replicas * sums[1]:
            raise RunError(
                f"workers resumed from different steps (this one, {self.task}, from step "
                f"{self.global_step}); copy the chief's {self.checkpoints.chief_directory} to "
                "every worker or start fresh with a new output_dir"
            )

    def _save(self):
        self.checkpoints.save(self.global_step)

    def run(self, stop_at: int | None = None) -> Genotype | None:
        """Runs (or resumes) the search; writes genotype, diagrams, logs; returns the genotype.

        ``stop_at`` stops early, with a checkpoint, once the global step reaches it (and
        returns None): a run cut short that the same command resumes.
        """
        cfg = self.cfg
        start = self.restore()
        outputs = SearchLog(self.out, self.chief, self.primitives, cfg.nodes)
        if start == 0:
            outputs.settings(dataclasses.asdict(cfg))
        interrupted = InterruptFlag()
        history = outputs.history(self.global_step)
        genotype = self.genotype()
        done = start // self.steps_per_epoch
        if done and (not history or history[-1]["epoch"] < done):
            genotype = self._end_epoch(outputs, done - 1, history)  # outputs lost in a crash
        try:
            for epoch in range(done, cfg.epochs):
                skip = self.global_step - epoch * self.steps_per_epoch
                if skip == 0:
                    self.sums.assign(tf.zeros(5, tf.float64))
                search_arch = epoch >= warmup_epochs(cfg)
                self.log(f"epoch {epoch + 1}/{cfg.epochs}" + ("" if search_arch else " (warm-up)"))
                bar = tf.keras.utils.Progbar(
                    self.steps_per_epoch,
                    stateful_metrics=["w_loss", "w_acc", "a_loss", "a_acc"],
                    verbose=1 if sys.stdout.isatty() else 2,  # a log file gets one line
                )
                bar.update(skip)
                for batch in self.epoch_data(epoch, skip):
                    self._set_temperature()
                    stop = tf.constant(float(interrupted.signum is not None))
                    values = self.search_step(batch, search_arch, stop).numpy().astype("float64")
                    step = self.global_step + 1
                    if not np.all(np.isfinite(values)):
                        raise RunError(
                            f"non-finite loss at step {step} (epoch {epoch + 1}; weight loss "
                            f"{values[0]:g}, architecture loss {values[2]:g}); the last good "
                            f"checkpoint is kept in {self.checkpoints.directory}; try a lower "
                            "w_lr or a_lr in a new output_dir"
                        )
                    self.step.assign(step)
                    self.sums.assign_add(np.append(values[:4], cfg.batch_size))
                    metrics = self._epoch_metrics(search_arch)
                    bar.update(step - epoch * self.steps_per_epoch, metrics)
                    outputs.step(
                        step,
                        values[0],
                        values[2] if search_arch else None,
                        {
                            "weights": _number(self.w_opt.learning_rate),
                            "arch": _number(self.a_opt.learning_rate),
                        },
                        self.architect.temperature,
                    )
                    if values[4] > 0:  # SIGINT or SIGTERM on some worker
                        self._save()
                        raise Interrupted(
                            f"checkpoint at step {step} in {self.checkpoints.directory}; rerun the "
                            "same command to continue",
                            interrupted.signum or signal.SIGTERM,
                        )
                    if step == stop_at:
                        self._save()
                        return None
                    if step % cfg.checkpoint_every == 0:
                        self._save()
                genotype = self._end_epoch(outputs, epoch, history)
        finally:
            interrupted.restore()
            outputs.close()
        outputs.genotype(genotype, self.alphas())
        return genotype

    def _set_temperature(self):
        cfg = self.cfg
        progress = self.global_step / max(self.total_steps, 1)
        self.architect.set_temperature(
            progress, cfg.temperature, cfg.temperature_final, cfg.temperature_schedule
        )

    def _epoch_metrics(self, search_arch: bool = True) -> list[tuple[str, float]]:
        """The epoch's running means; the architecture's only once the alphas move."""
        s = self.sums.numpy()
        n = max(s[4], 1.0)
        metrics = [("w_loss", s[0] * self.cfg.batch_size / n), ("w_acc", s[1] / n)]
        if search_arch:
            metrics += [("a_loss", s[2] * self.cfg.batch_size / n), ("a_acc", s[3] / n)]
        return metrics

    def _end_epoch(self, outputs: SearchLog, epoch: int, history: list) -> Genotype:
        """Writes the epoch's record, genotype and summaries, then (only then) its checkpoint."""
        genotype = self.genotype()
        outputs.epoch(
            history,
            epoch + 1,
            self.global_step,
            dict(self._epoch_metrics(epoch >= warmup_epochs(self.cfg))),
            parameter_free_counts(genotype),
            self.architect.temperature,
            genotype,
            self.architect.mixing_weights(),
            self.alphas(),
            self.architect.costs(genotype),
        )
        self._save()
        self.log(f"  genotype: {genotype}")
        return genotype

    def genotype(self) -> Genotype:
        return self.architect.genotype(self.cfg.search_space)

    def alphas(self) -> dict:
        """What ``alphas.json`` holds: the primitives, the temperature and both alpha tables."""
        return self.architect.record(self.primitives)


def cost_table(cfg: SearchConfig, image_size: int) -> cost.CostTable:
    """The cost of every op at every edge of the search's supernet, as ``cfg.cost`` counts it."""
    shapes = cost.edge_shapes(
        image_size, cfg.init_channels, cfg.layers, cfg.nodes, cfg.groups, cfg.deployable
    )
    if cfg.cost == "latency":
        from bats_tf import latency

        needed = latency.needed_keys(cfg.search_space, shapes)
        return cost.latency_table(cfg.search_space, shapes, latency.load(cfg.latency_table, needed))
    return cost.complexity_table(cfg.cost, cfg.search_space, shapes, cfg.scaling, cfg.shortcut)


def _number(value) -> float:
    """A Python float of a tensor or a (possibly mirrored) variable."""
    return float(tf.convert_to_tensor(value).numpy())


def _synchronize_batch_norm(model):
    """Batch statistics of the global batch in the Keras BatchNormalization layers."""
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer.synchronized, layer.fused = True, False
