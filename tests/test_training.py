"""Training: distillation loss, weight decay, two-stage carry-over, resume, the train script."""

import bats_tf  # noqa: F401

# isort: split
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import make_folder_dataset, tiny_train_config

from bats_tf import data, network, optimizers, training
from bats_tf.checkpoints import RunCheckpoints
from bats_tf.distiller import Distiller
from bats_tf.errors import ConfigError
from bats_tf.resumable_fit import resumable_fit, resume_position
from bats_tf.training_logs import read_history

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder_dataset(tmp_path_factory.mktemp("data"), per_class=24)


def config(data_dir, **kw):
    return tiny_train_config(data_dir, **{"batch_size": 18, **kw})


def test_distiller_loss_matches_hand_computation():
    rng = np.random.RandomState(0)
    x = rng.randn(6, 4).astype("float32")
    y = np.array([0, 1, 2, 0, 1, 2])

    def dense(seed):
        inp = tf.keras.Input((4,))
        layer = tf.keras.layers.Dense(
            3, kernel_initializer=tf.keras.initializers.RandomNormal(seed=seed)
        )
        return tf.keras.Model(inp, layer(inp))

    student, teacher = dense(1), dense(2)
    w, t = 0.7, 3.0
    distiller = Distiller(student, teacher, kd_weight=w, temperature=t)
    _, loss = distiller.per_example_loss(x, y)

    def log_softmax(z):
        z = z - z.max(-1, keepdims=True)
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    s, te = student(x).numpy(), teacher(x).numpy()
    ce = -log_softmax(s)[np.arange(6), y]
    p = np.exp(log_softmax(te / t))
    kl = (p * (log_softmax(te / t) - log_softmax(s / t))).sum(-1)
    np.testing.assert_allclose(loss.numpy(), (1 - w) * ce + w * t * t * kl, rtol=1e-5)
    assert not teacher.trainable
    # without a teacher: cross-entropy; an auxiliary output adds its weighted cross-entropy
    inp = tf.keras.Input((4,))
    two = tf.keras.Model(inp, [student(inp), teacher(inp)])
    _, loss = Distiller(two, aux_weight=0.4).per_example_loss(x, y)
    aux_ce = -log_softmax(te)[np.arange(6), y]
    np.testing.assert_allclose(loss.numpy(), ce + 0.4 * aux_ce, rtol=1e-5)


def _keys(ds):
    """Each example's image bytes (the fixture's images are all different)."""
    return [image.numpy().tobytes() for image, _ in ds]


def test_datasets_follow_the_partition(folder):
    full = _keys(data.load_split("folder", "train", folder)[0])
    assert len(set(full)) == len(full) == 72

    def part(name, m=None):
        return [full[i] for i in data.part_indices(len(full), name, m)]

    train, val, info = training.datasets(config(folder))
    assert (_keys(train), _keys(val), info.num_examples) == (part("train"), part("val"), 72)
    assert (len(part("train")), len(part("val"))) == (58, 14)
    cfg = config(folder, train_part="final_train", max_examples=10, max_val_examples=4)
    train, val, _ = training.datasets(cfg)
    assert (_keys(train), _keys(val)) == (part("final_train", 10), part("val", 4))
    searched = set(part("search_weights")) | set(part("search_arch"))
    assert not set(_keys(train)) & searched and not set(_keys(val)) & set(part("train"))
    # With --val_split: all of --split (or its first N), all of the val split (or its first N).
    train, val, _ = training.datasets(config(folder, val_split="train", max_val_examples=5))
    assert (_keys(train), _keys(val)) == (full, part(None, 5))
    train, _, _ = training.datasets(config(folder, val_split="train", max_examples=7))
    assert _keys(train) == part(None, 7)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(train_part="val"), "^train_part=val: must be one of train, final_train$"),
        (dict(val_split="train", train_part="final_train"), "^train_part=final_train: "),
        (dict(max_val_examples=15), r"^max_val_examples=15: must be in \[1, 14\]"),
        (dict(train_part="final_train", max_examples=23), r"^max_examples=23: .*\[1, 22\]"),
    ],
)
def test_datasets_errors(folder, kw, match):
    with pytest.raises(ConfigError, match=match):
        training.datasets(config(folder, **kw))


def test_a_run_made_with_the_old_holdout_is_not_resumed(folder, tmp_path):
    """Its data were divided otherwise: a removed setting counts as a difference."""
    cfg = config(folder)
    out = str(tmp_path / "old")
    training.claim_output_dir(cfg, out)
    training.claim_output_dir(cfg, out)  # the same run: accepted
    path = os.path.join(out, training.CONFIG_FILE)
    with open(path) as f:
        old = json.load(f)
    old.pop("train_part"), old.pop("max_val_examples")
    with open(path, "w") as f:
        json.dump({**old, "holdout": 0.25}, f)
    with pytest.raises(training.OutputDirError, match=r"\(holdout\)"):
        training.claim_output_dir(cfg, out)


def test_weight_decay_spares_latent_binary_kernels():
    model = network.build_network("bats_paper", 10, 16, init_channels=8, layers=3, groups=1)
    latent = optimizers.latent_binary_kernels(model)
    assert latent and all("conv" in v.name for v in latent)
    real = model.get_layer("classifier_dense").kernel
    cfg = training.TrainConfig(weight_decay=0.1, lr=0.1, schedule="constant")
    opt = optimizers.make_optimizer(cfg, 10, model)
    before = [v.numpy() for v in (latent[0], real)]
    variables = model.trainable_variables
    opt.apply_gradients(zip([tf.zeros_like(v) for v in variables], variables))  # decay only
    np.testing.assert_array_equal(latent[0].numpy(), before[0])
    np.testing.assert_allclose(real.numpy(), before[1] * (1 - 0.1 * 0.1), rtol=1e-5)


def test_schedules():
    cos = optimizers.make_schedule("cosine", 1.0, 100)
    assert float(cos(0)) == 1.0 and float(cos(50)) == pytest.approx(0.5) and float(cos(100)) < 1e-6
    step = optimizers.make_schedule("step", 1.0, 100)
    assert [float(step(i)) for i in (10, 60, 90)] == pytest.approx([1.0, 0.1, 0.01])
    with pytest.raises(ValueError):
        optimizers.make_schedule("wavy", 1.0, 10)


class Recorder(tf.keras.callbacks.Callback):
    """Student weights and epochs as each fit starts."""

    def __init__(self):
        super().__init__()
        self.weights, self.epochs = [], []

    def on_train_begin(self, logs=None):
        layers = network.flat_layers(self.model.student)
        self.weights.append(
            {(la.name, i): w.numpy() for la in layers for i, w in enumerate(la.weights)}
        )

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)


@pytest.mark.slow
def test_two_stages_carry_weights_over(folder, tmp_path):
    out = str(tmp_path / "run")
    recorder = Recorder()
    result = training.train(config(folder, stages=(1, 2)), out, callbacks=[recorder])
    assert result["epochs"] == 2 and set(result["stages"]) == {"1", "2"}
    stage1 = training.load_model(os.path.join(out, "stage1", training.MODEL_FILE))
    start2 = recorder.weights[1]
    scales = 0
    for layer in stage1.layers:
        for i, w in enumerate(layer.weights):
            got = start2[layer.name, i]
            if isinstance(layer, network.ops.ChannelScale):  # times mean|w| of its conv kernel
                kernel = stage1.get_layer(layer.name[: -len("_scale")] + "_conv").kernel.numpy()
                alpha = np.abs(kernel).mean(axis=(0, 1, 2))
                np.testing.assert_allclose(got, w.numpy() * alpha, rtol=1e-5)
                scales += 1
            else:
                np.testing.assert_array_equal(got, w.numpy())
    assert scales > 0
    final = training.load_model(os.path.join(out, training.MODEL_FILE))
    assert len(network.binary_convs(final)) > 0
    with open(os.path.join(out, training.METRICS_FILE)) as f:
        metrics = json.load(f)
    assert {"top1", "top5", "loss", "params", "bops", "flops", "ops", "epochs", "seconds"} <= set(
        metrics
    )
    assert metrics["bops"] > 0 and 0 <= metrics["top1"] <= 1


class Interrupt(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


@pytest.mark.slow
def test_resume_continues_an_interrupted_fit(folder, tmp_path):
    out = str(tmp_path / "run")
    cfg = config(folder, epochs=4, schedule="step", layers=1)
    first = Recorder()
    with pytest.raises(RuntimeError, match="interrupted"):
        training.train(cfg, out, callbacks=[first, Interrupt()])
    assert first.epochs == [0, 1, 2]
    stage = os.path.join(out, "stage1")
    steps = int(training.datasets(cfg)[0].cardinality()) // cfg.batch_size
    assert resume_position(RunCheckpoints({}, stage, training.BACKUP), steps) == (2, 0)
    assert not os.path.exists(os.path.join(stage, training.MODEL_FILE))
    second = Recorder()
    training.train(cfg, out, callbacks=[second])
    assert second.epochs == [2, 3]
    history = read_history(os.path.join(stage, training.HISTORY_FILE))
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    assert (
        history[3]["learning_rate"] < history[0]["learning_rate"]
    )  # the schedule went on from the restored step
    with open(os.path.join(stage, "history.csv")) as f:
        assert len(f.read().strip().splitlines()) == 5
    # a finished run is not trained again; other settings in the same folder are refused
    third = Recorder()
    training.train(cfg, out, callbacks=[third])
    assert third.epochs == []
    with pytest.raises(training.OutputDirError, match=r"other settings \(epochs"):
        training.train(config(folder, epochs=5, layers=1), out)


@pytest.mark.slow
def test_train_script_with_self_teacher(folder, tmp_path):
    out = str(tmp_path / "run")
    args = [
        "--dataset=folder",
        f"--data_dir={folder}",
        "--train_part=final_train",
        "--max_val_examples=10",
        "--init_channels=8",
        "--layers=2",
        "--groups=1",
        "--epochs=1",
        "--batch_size=18",
        "--stages=2",
        "--teacher=self",
        "--kd_weight=0.5",
        "--kd_temperature=2",
        "--auxiliary_weight=0.4",
        "--drop_path=0.2",
        f"--output_dir={out}",
    ]
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "train.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert '"top1"' in run.stdout
    assert os.path.exists(os.path.join(out, "teacher", training.MODEL_FILE))
    teacher = training.load_model(os.path.join(out, "teacher", training.MODEL_FILE))
    assert not network.binary_convs(teacher) and not network.lce_compatibility(teacher)
    model = training.load_model(os.path.join(out, training.MODEL_FILE))
    assert not network.drop_path_layers(model) and len(model.outputs) == 1
    for name in ("history.json", "history.csv", "logs", "checkpoints"):
        assert os.path.exists(os.path.join(out, "stage2", name))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stages=3"], "--stages=3"),
        (["--groups=5"], "--groups=5"),
        (["--train_part=val"], "--train_part"),
        (["--max_val_examples=0"], "--max_val_examples=0: 0 is not a positive integer"),
        (["--val_split=test", "--train_part=final_train"], "--train_part=final_train"),
        (["--teacher=/no/such/model.keras"], "--teacher"),
        (["--genotype=nope"], "--genotype=nope"),
        (["--dataset=folder", "--data_dir=/no/such/dir"], "--data_dir"),
    ],
)
def test_train_script_flag_errors(args, message, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "train.py"),
            f"--output_dir={tmp_path / 'out'}",
            "--init_channels=32",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1]


def _backup_run(folder, steps, stop_at=None):
    """Fits a small model for 2 epochs of ``steps`` batches with :func:`resumable_fit`,
    sending SIGTERM to itself after batch ``stop_at = (epoch, batch)``."""
    import signal

    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([tf.keras.layers.Dense(3, input_shape=(4,))])
    opt = tf.keras.optimizers.Adam(0.1)
    model.compile(opt, "mse")
    opt.build(model.trainable_variables)
    rng = np.random.RandomState(0)
    x, y = rng.randn(2 * steps * 5, 4), rng.randn(2 * steps * 5, 3)

    def epoch_data(epoch, skip):
        part = slice(epoch * steps * 5, (epoch + 1) * steps * 5)
        return tf.data.Dataset.from_tensor_slices((x[part], y[part])).batch(5).skip(skip)

    class Kill(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            if (self.epoch, batch) == stop_at:
                os.kill(os.getpid(), signal.SIGTERM)

    checkpoints = RunCheckpoints(dict(model=model, optimizer=opt), folder, "backup")
    resumable_fit(model, epoch_data, 2, steps, checkpoints, [Kill()], verbose=0)
    return model.get_weights()


def _position(folder, steps):
    return resume_position(RunCheckpoints({}, folder, "backup"), steps)


def test_backup_on_sigterm_resumes_at_the_next_batch(tmp_path):
    from bats_tf.errors import Interrupted

    steps = 4
    want = _backup_run(str(tmp_path / "ref"), steps)
    cut = str(tmp_path / "cut")
    with pytest.raises(Interrupted, match=r"backup at epoch 2, batch 3;"):  # the next batch end
        _backup_run(cut, steps, stop_at=(1, 1))
    assert _position(cut, steps) == (1, 3)
    got = _backup_run(cut, steps)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_sigterm_in_an_epochs_last_batch_lets_the_epoch_end(tmp_path):
    """Validation and the epoch's callbacks run first; the backup is the epoch-end one."""
    from bats_tf.errors import Interrupted

    steps = 4
    want = _backup_run(str(tmp_path / "ref"), steps)
    cut = str(tmp_path / "cut")
    with pytest.raises(Interrupted, match=r"backup at the end of epoch 1;"):
        _backup_run(cut, steps, stop_at=(0, steps - 1))
    assert _position(cut, steps) == (1, 0)
    for g, w in zip(_backup_run(cut, steps), want):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_the_stage_plan_is_data():
    plan = training.stage_plan(training.TrainConfig(teacher="self", stages=(1, 2)))
    assert [(s.name, s.activations, s.weights, s.teacher, s.init) for s in plan] == [
        ("teacher", "real", "real", None, None),
        ("stage1", "binary", "real", "teacher", None),
        ("stage2", "binary", "binary", "teacher", "stage1"),
    ]
    plan = training.stage_plan(training.TrainConfig(teacher="t.keras", stages=(2,)))
    assert [(s.name, s.teacher, s.init) for s in plan] == [("stage2", "t.keras", "stage1")]
