"""The BATS search loop: alternating architecture and weight steps with ``tf.GradientTape``.

Each step takes one batch of the architecture part and one of the weight part of the
training split: first the alphas move on the architecture batch (first-order DARTS, or
second-order with an unrolled virtual weight step), then the weights on the weight batch.
Everything a run needs to continue is in its checkpoint (weights, alphas, both optimizers,
global step, running sums); data order and augmentation derive from ``(seed, epoch)``, so a
resumed run repeats exactly what an uninterrupted one would have done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import bats_tf  # noqa: F401

# isort: split
import larq as lq
import numpy as np
import tensorflow as tf

from bats_tf import data, ops, supernet, visualize
from bats_tf.genotype import Genotype, derive
from bats_tf.io_utils import atomic_write_json
from bats_tf.losses import distillation_loss
from bats_tf.search_space import primitives_of

CONFIG_FILE = "search_config.json"


class RunError(RuntimeError):
    """The run cannot go on (non-finite loss, incompatible checkpoint); the message says why."""


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """Every setting of a search. Defaults follow DARTS where the BATS paper is silent."""

    dataset: str = "cifar10"
    data_dir: str | None = None
    split: str = "train"
    train_portion: float = 0.5
    max_examples: int | None = None
    search_space: str = "bats"
    activations: str = "binary"
    weights: str = "binary"
    epochs: int = 50
    warmup_epochs: int = 0
    batch_size: int = 64
    init_channels: int = 16
    layers: int = 8
    nodes: int = 4
    groups: int = 4
    scaling: bool = True
    shortcut: bool = True
    fused: bool = True
    temperature: float = 0.2
    temperature_final: float = 0.2
    temperature_schedule: str = "constant"
    order: str = "first"
    w_lr: float = 0.025
    w_lr_min: float = 0.001
    w_momentum: float = 0.9
    w_weight_decay: float = 3e-4
    grad_clip: float = 5.0
    a_lr: float = 3e-4
    a_beta1: float = 0.5
    a_beta2: float = 0.999
    a_weight_decay: float = 1e-3
    teacher: str | None = None
    kd_weight: float = 0.5
    kd_temperature: float = 4.0
    seed: int = 0
    deterministic: bool = False
    strategy: str = "default"
    checkpoint_every: int = 200

    def op_config(self) -> ops.OpConfig:
        return ops.OpConfig.for_space(
            self.search_space,
            self.activations,
            self.weights,
            groups=self.groups,
            scaling=self.scaling,
            shortcut=self.shortcut,
            pool_bn=True,
        )


def _is_latent_binary(v) -> bool:
    """Latent weights of binary kernels: clipped, and kept out of weight decay."""
    return isinstance(getattr(v, "constraint", None), lq.constraints.WeightClip)


class Searcher:
    """Builds the supernet, data and optimizers of a :class:`SearchConfig` and runs it."""

    def __init__(self, cfg: SearchConfig, output_dir: str, log=print):
        self.cfg, self.out, self.log = cfg, output_dir, log
        if cfg.deterministic:
            tf.config.experimental.enable_op_determinism()
        tf.keras.utils.set_random_seed(cfg.seed)
        self.w_data, self.a_data, self.info = data.search_splits(
            cfg.dataset, cfg.data_dir, cfg.split, cfg.train_portion, cfg.max_examples, cfg.seed
        )
        self.steps_per_epoch = min(len(self.w_data), len(self.a_data)) // cfg.batch_size
        if self.steps_per_epoch < 1:
            raise data.DataError(
                f"--batch_size={cfg.batch_size}: larger than each data part "
                f"({min(len(self.w_data), len(self.a_data))} examples)"
            )
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.primitives = primitives_of(cfg.search_space)
        from bats_tf.cli import make_strategy

        self.strategy = make_strategy(cfg.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        if cfg.order == "second" and self.replicas > 1:
            raise RunError("--order=second runs on one device only (use --order=first)")
        with self.strategy.scope():
            self.model = supernet.build_supernet(
                cfg.search_space,
                self.info.num_classes,
                self.info.image_size,
                cfg.init_channels,
                cfg.layers,
                cfg.nodes,
                cfg=cfg.op_config(),
                fused=cfg.fused and supernet.can_fuse(cfg.search_space),
            )
            self.arch = supernet.Architecture(
                cfg.search_space, cfg.nodes, cfg.seed, cfg.temperature
            )
            schedule = tf.keras.optimizers.schedules.CosineDecay(
                cfg.w_lr, max(self.total_steps, 1), alpha=cfg.w_lr_min / cfg.w_lr
            )
            self.w_opt = tf.keras.optimizers.SGD(schedule, momentum=cfg.w_momentum)
            self.a_opt = tf.keras.optimizers.Adam(cfg.a_lr, beta_1=cfg.a_beta1, beta_2=cfg.a_beta2)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            # Running sums of the current epoch: w_loss, w_correct, a_loss, a_correct, examples.
            self.sums = tf.Variable(tf.zeros(5, tf.float64), trainable=False, name="epoch_sums")
        self.teacher = load_teacher(cfg.teacher, self.info) if cfg.teacher else None
        self.w_vars = self.model.trainable_variables
        with self.strategy.scope():  # slots exist before tracing and before a restore
            self.w_opt.build(self.w_vars)
            self.a_opt.build(self.arch.alphas)
        self.decay = [0.0 if _is_latent_binary(v) else cfg.w_weight_decay for v in self.w_vars]
        self.ckpt = tf.train.Checkpoint(
            model=self.model,
            arch=self.arch,
            w_opt=self.w_opt,
            a_opt=self.a_opt,
            step=self.step,
            sums=self.sums,
        )
        self.manager = tf.train.CheckpointManager(
            self.ckpt, os.path.join(output_dir, "checkpoints"), max_to_keep=2
        )
        self._step_fn = tf.function(self._distributed_step)

    # ----------------------------------------------------------------- steps (per replica)

    def _loss(self, images, labels, logits):
        cfg = self.cfg
        t_logits = self.teacher(images, training=False) if self.teacher is not None else None
        per_example = distillation_loss(labels, logits, t_logits, cfg.kd_weight, cfg.kd_temperature)
        return tf.nn.compute_average_loss(per_example, global_batch_size=cfg.batch_size)

    def _forward(self, images, labels, weights=None):
        weights = self.arch.mixing_weights() if weights is None else weights
        logits = self.model([images, *weights], training=True)
        loss = self._loss(images, labels, logits)
        correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), labels), tf.float32))
        return loss, correct

    def _sum_replicas(self, grads):
        if self.replicas == 1:
            return grads
        return tf.distribute.get_replica_context().all_reduce("sum", grads)

    def _weight_grads(self, images, labels, weights):
        with tf.GradientTape() as tape:
            loss, correct = self._forward(images, labels, weights)
        grads = self._sum_replicas(tape.gradient(loss, self.w_vars))
        grads = [g + d * v if d else g for g, v, d in zip(grads, self.w_vars, self.decay)]
        return grads, loss, correct

    def _weight_step(self, images, labels):
        weights = [tf.stop_gradient(w) for w in self.arch.mixing_weights()]
        grads, loss, correct = self._weight_grads(images, labels, weights)
        grads, _ = tf.clip_by_global_norm(grads, self.cfg.grad_clip)
        self.w_opt.apply_gradients(zip(grads, self.w_vars), skip_gradients_aggregation=True)
        return loss, correct

    def _arch_step(self, images, labels):
        with tf.GradientTape() as tape:
            loss, correct = self._forward(images, labels)
        grads = self._sum_replicas(tape.gradient(loss, self.arch.alphas))
        self._apply_arch(grads)
        return loss, correct

    def _apply_arch(self, grads):
        alphas = self.arch.alphas
        grads = [g + self.cfg.a_weight_decay * a for g, a in zip(grads, alphas)]
        self.a_opt.apply_gradients(zip(grads, alphas), skip_gradients_aggregation=True)

    def _arch_step_unrolled(self, w_images, w_labels, images, labels):
        """Second-order DARTS: the gradient at the virtual weights ``w - lr * dL_train/dw``.

        The Hessian-vector product is a central finite difference (DARTS eq. 8). The virtual
        step leaves out momentum, as a plain SGD step.
        """
        lr = tf.cast(self.w_opt.learning_rate, tf.float32)
        backup = [tf.identity(v) for v in self.w_vars]
        fixed = [tf.stop_gradient(w) for w in self.arch.mixing_weights()]
        grads, _, _ = self._weight_grads(w_images, w_labels, fixed)
        for v, g in zip(self.w_vars, grads):
            v.assign_sub(lr * g)
        with tf.GradientTape() as tape:
            loss, correct = self._forward(images, labels)
        d_alpha, d_w = tape.gradient(loss, [self.arch.alphas, self.w_vars])
        eps = 0.01 / (tf.linalg.global_norm(d_w) + 1e-12)
        hessian = []
        for sign in (1.0, -1.0):
            for v, b, d in zip(self.w_vars, backup, d_w):
                v.assign(b + sign * eps * d)
            with tf.GradientTape() as tape:
                train_loss, _ = self._forward(w_images, w_labels)
            hessian.append(tape.gradient(train_loss, self.arch.alphas))
        for v, b in zip(self.w_vars, backup):
            v.assign(b)
        grads = [
            da - lr * (hp - hn) / (2.0 * eps) for da, hp, hn in zip(d_alpha, hessian[0], hessian[1])
        ]
        self._apply_arch(grads)
        return loss, correct

    def _replica_step(self, batch, search_arch):
        (w_images, w_labels), (a_images, a_labels) = batch
        a_loss = a_correct = tf.constant(0.0)
        if search_arch:
            if self.cfg.order == "second":
                a_loss, a_correct = self._arch_step_unrolled(w_images, w_labels, a_images, a_labels)
            else:
                a_loss, a_correct = self._arch_step(a_images, a_labels)
        w_loss, w_correct = self._weight_step(w_images, w_labels)
        return tf.stack([w_loss, w_correct, a_loss, a_correct])

    def _distributed_step(self, batch, search_arch):
        out = self.strategy.run(self._replica_step, args=(batch, search_arch))
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, out, axis=None)

    # ------------------------------------------------------------------------------ loop

    def _epoch_data(self, epoch: int, skip: int):
        cfg = self.cfg
        parts = [
            data.pipeline(ds, self.info, cfg.batch_size, True, cfg.seed + k, epoch, skip)
            for k, ds in enumerate((self.w_data, self.a_data))
        ]
        ds = tf.data.Dataset.zip(tuple(parts)).take(self.steps_per_epoch - skip)
        return self.strategy.experimental_distribute_dataset(ds)

    def restore(self) -> int:
        """Restores the latest checkpoint of the output folder; returns the global step."""
        latest = self.manager.latest_checkpoint
        if latest:
            try:
                self.ckpt.restore(latest).assert_existing_objects_matched()
            except (tf.errors.OpError, AssertionError, ValueError) as e:
                raise RunError(
                    f"{latest}: checkpoint is corrupt or from another configuration ({e}); "
                    "start fresh with a new --output_dir"
                ) from None
            self.log(f"resumed from {latest} (step {int(self.step)})")
        return int(self.step)

    def run(self, stop_at: int | None = None) -> Genotype | None:
        """Runs (or resumes) the search; writes genotype, diagrams, logs; returns the genotype.

        ``stop_at`` stops early, with a checkpoint, once the global step reaches it (and
        returns None): a run cut short that the same command resumes.
        """
        cfg = self.cfg
        start = self.restore()
        writer = tf.summary.create_file_writer(os.path.join(self.out, "tb"))
        interrupted = _InterruptFlag()
        history = self._load_history()
        genotype = self.genotype()
        epoch = start // self.steps_per_epoch
        try:
            for epoch in range(start // self.steps_per_epoch, cfg.epochs):
                skip = int(self.step) - epoch * self.steps_per_epoch
                search_arch = epoch >= cfg.warmup_epochs
                self.log(f"epoch {epoch + 1}/{cfg.epochs}" + ("" if search_arch else " (warm-up)"))
                bar = tf.keras.utils.Progbar(
                    self.steps_per_epoch, stateful_metrics=["w_loss", "w_acc", "a_loss", "a_acc"]
                )
                bar.update(skip)
                for batch in self._epoch_data(epoch, skip):
                    self._set_temperature()
                    values = self._step_fn(batch, search_arch).numpy().astype("float64")
                    step = int(self.step) + 1
                    if not np.all(np.isfinite(values)):
                        raise RunError(
                            f"non-finite loss at step {step} (epoch {epoch + 1}); the last good "
                            f"checkpoint is kept in {self.manager.directory}"
                        )
                    self.step.assign(step)
                    self.sums.assign_add(np.append(values, cfg.batch_size))
                    bar.update(step - epoch * self.steps_per_epoch, self._epoch_metrics())
                    self._log_step(writer, step, values)
                    if interrupted.set:
                        raise KeyboardInterrupt
                    if step == stop_at:
                        self.manager.save(checkpoint_number=step)
                        return None
                    if step % cfg.checkpoint_every == 0:
                        self.manager.save(checkpoint_number=step)
                genotype = self._end_epoch(writer, epoch, history)
        except KeyboardInterrupt:
            self.manager.save(checkpoint_number=int(self.step))
            self.log(f"\ninterrupted: checkpoint at step {int(self.step)} in {self.out}")
            raise
        finally:
            interrupted.restore()
            writer.close()
        self._write_genotype(genotype, final=True)
        return genotype

    def _set_temperature(self):
        cfg = self.cfg
        progress = int(self.step) / max(self.total_steps, 1)
        self.arch.temperature.assign(
            supernet.temperature_at(
                progress, cfg.temperature, cfg.temperature_final, cfg.temperature_schedule
            )
        )

    def _epoch_metrics(self) -> list[tuple[str, float]]:
        s = self.sums.numpy()
        n = max(s[4], 1.0)
        return [
            ("w_loss", s[0] * self.cfg.batch_size / n),
            ("w_acc", s[1] / n),
            ("a_loss", s[2] * self.cfg.batch_size / n),
            ("a_acc", s[3] / n),
        ]

    def _log_step(self, writer, step, values):
        with writer.as_default(step=step):
            tf.summary.scalar("step/weight_loss", values[0])
            tf.summary.scalar("step/arch_loss", values[2])
            tf.summary.scalar("lr/weights", float(self.w_opt.learning_rate))
            tf.summary.scalar("lr/arch", float(self.a_opt.learning_rate))
            tf.summary.scalar("temperature", float(self.arch.temperature))

    def _end_epoch(self, writer, epoch, history) -> Genotype:
        metrics = dict(self._epoch_metrics())
        genotype = self.genotype()
        counts = op_counts(genotype)
        record = {
            "epoch": epoch + 1,
            "step": int(self.step),
            **metrics,
            **counts,
            "temperature": float(self.arch.temperature),
            "genotype": genotype.to_dict(),
        }
        history.append(record)
        weights = [w.numpy()[0] for w in self.arch.mixing_weights()]
        with writer.as_default(step=epoch + 1):
            for k, v in metrics.items():
                tf.summary.scalar(f"epoch/{k}", v)
            for k, v in counts.items():
                tf.summary.scalar(f"genotype/{k}", v)
            tf.summary.text("genotype", f"```\n{genotype.to_json()}```")
            for name, w in zip(("normal", "reduce"), weights):
                heat = visualize.alpha_heatmap(w, self.primitives, f"{name} cell", self.cfg.nodes)
                tf.summary.image(f"alphas/{name}", heat[None])
                cell = visualize.cell_image(genotype, name == "reduce")
                tf.summary.image(f"cell/{name}", cell[None])
        writer.flush()
        self.sums.assign(tf.zeros(5, tf.float64))
        self.manager.save(checkpoint_number=int(self.step))
        self._write_genotype(genotype, final=False, epoch=epoch + 1)
        atomic_write_json(os.path.join(self.out, "history.json"), history)
        self.log(f"  genotype: {genotype}")
        return genotype

    def genotype(self) -> Genotype:
        weights = [w.numpy()[0] for w in self.arch.mixing_weights()]
        return derive(weights[0], weights[1], self.cfg.search_space)

    def _write_genotype(self, genotype: Genotype, final: bool, epoch: int | None = None):
        if epoch is not None:
            genotype.save(os.path.join(self.out, "genotypes", f"epoch_{epoch:03d}.json"))
        genotype.save(os.path.join(self.out, "genotype.json"))
        alphas = {
            "primitives": list(self.primitives),
            "temperature": float(self.arch.temperature),
            "alpha_normal": self.arch.normal.numpy().tolist(),
            "alpha_reduce": self.arch.reduce.numpy().tolist(),
        }
        atomic_write_json(os.path.join(self.out, "alphas.json"), alphas)
        if final:
            visualize.write_cell_diagrams(genotype, self.out)

    def _load_history(self) -> list:
        path = os.path.join(self.out, "history.json")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
        return [h for h in history if h["step"] <= int(self.step)]


def op_counts(genotype: Genotype) -> dict[str, int]:
    """Parameter-free ops in each cell: the collapse that BATS's temperature prevents."""
    counts = {}
    for name in ("normal", "reduce"):
        edges, _ = genotype.cell(name == "reduce")
        counts[f"{name}_skip"] = sum(op == "skip_connect" for op, _ in edges)
        counts[f"{name}_pool"] = sum(op.endswith("pool_3x3") for op, _ in edges)
    return counts


def load_teacher(path: str, info: data.DatasetInfo):
    """A saved real-valued Keras model mapping images to logits."""
    from bats_tf.data import DataError

    try:
        model = tf.keras.models.load_model(path, custom_objects=ops.CUSTOM_OBJECTS, compile=False)
    except (OSError, ValueError, ImportError) as e:
        raise DataError(f"--teacher={path}: not a loadable Keras model ({e})") from None
    out = model.output_shape
    if out[-1] != info.num_classes:
        raise DataError(
            f"--teacher={path}: outputs {out[-1]} classes, the dataset has {info.num_classes}"
        )
    model.trainable = False
    return model


class _InterruptFlag:
    """Turns SIGTERM into a flag checked between steps (SIGINT raises KeyboardInterrupt)."""

    def __init__(self):
        self.set = False
        try:
            self._old = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            self._old = None

    def _handle(self, *_):
        self.set = True

    def restore(self):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
