"""Second-order DARTS: the unrolled architecture gradient against finite differences."""

import bats_tf  # noqa: F401

# isort: split
import numpy as np
import pytest
import tensorflow as tf
from conftest import make_folder_dataset

from bats_tf.search import SearchConfig, Searcher

XI = 0.1  # virtual step: the Hessian term is then as large as the first-order gradient
H = 3e-3  # finite-difference step in alpha (alpha / T moves by 0.015)
MAX_POOL_ALPHA = -1.2  # max_pool_3x3 mixing weight e^-6 of the others' at T = 0.2


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory):
    """3 classes of 8x8 images, 12 in each search part."""
    return make_folder_dataset(tmp_path_factory.mktemp("hypergradient"), size=8)


def _searcher(data_dir, out, fused):
    """A real-valued supernet whose unrolled loss is smooth in alpha.

    w' = w - xi * dL_train/dw jumps wherever a kink of the network (PReLU at 0, the argmax
    of a max pool) moves the weight gradient, so a finite difference across one is
    meaningless. PReLU slopes of 1 remove the first kinks; a tiny max-pool weight makes
    the jumps of the second far below the tolerance (its alpha is still checked).
    """
    cfg = SearchConfig(
        dataset="folder",
        data_dir=data_dir,
        activations="real",
        weights="real",
        epochs=1,
        batch_size=8,
        init_channels=4,
        layers=3,  # normal, reduction, reduction: both alphas matter
        nodes=1,
        groups=2,
        fused=fused,
        order="second",
        w_lr=XI,
        a_weight_decay=0.0,  # Architect.apply gets the bare hypergradient
        seed=0,
    )
    searcher = Searcher(cfg, out, log=lambda *_: None)
    for v in searcher.w_vars:
        if "prelu" in v.name:
            v.assign(tf.ones_like(v))
    for a in searcher.arch.alphas:
        a.assign(tf.concat([a[:, :1], tf.fill([a.shape[0], 1], MAX_POOL_ALPHA), a[:, 2:]], 1))
    return searcher


def _captured_gradient(searcher, step):
    """The gradient ``step()`` hands to ``Architect.apply``, run traced as in a search."""
    sinks = [tf.Variable(tf.zeros_like(a)) for a in searcher.arch.alphas]
    searcher.architect.apply = lambda grads: [s.assign(g) for s, g in zip(sinks, grads)]
    try:
        tf.function(step, autograph=False)()
    finally:
        del searcher.architect.apply
    return np.concatenate([s.numpy().ravel() for s in sinks])


def _unrolled_loss(searcher, xi, batch):
    """``alphas -> L_val(w - xi * (dL_train/dw + wd * w), alphas)``, weights left unchanged."""
    (w_images, w_labels), (a_images, a_labels) = batch
    model, arch, w_vars = searcher.model, searcher.arch, searcher.w_vars
    wd = searcher.cfg.w_weight_decay  # real weights: every variable is decayed

    def loss(images, labels):
        logits = model([images, *arch.mixing_weights()], training=True)
        ce = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
        return tf.reduce_mean(ce)

    @tf.function(autograph=False)
    def f(alphas):
        for a, value in zip(arch.alphas, alphas):
            a.assign(value)
        backup = [tf.identity(v) for v in w_vars]
        with tf.GradientTape() as tape:
            train = loss(w_images, w_labels)
        for v, g in zip(w_vars, tape.gradient(train, w_vars)):
            v.assign_sub(xi * (g + wd * v))
        val = loss(a_images, a_labels)
        with tf.control_dependencies([val]):
            for v, b in zip(w_vars, backup):
                v.assign(b)
        return tf.identity(val)

    shapes = [a.shape for a in arch.alphas]

    def of_flat(x):
        parts = np.split(x.astype("float32"), np.cumsum([np.prod(s) for s in shapes])[:-1])
        return float(f([p.reshape(s) for p, s in zip(parts, shapes)]))

    return of_flat


@pytest.mark.slow
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "reference_ops"])
def test_unrolled_hypergradient_matches_finite_differences(small_folder, tmp_path, fused):
    """``Searcher.architecture_step`` of the second order gives
    d/dalpha L_val(w - xi * dL_train(w, alpha)/dw, alpha).

    Each alpha entry's central difference of the unrolled validation loss, on the step's
    own two batches, is compared with the gradient the step hands to ``Architect.apply``.
    Observed relative errors (L2 over all alphas): second order 7e-4 (fused) and 1.4e-3
    (reference ops), within 1.6e-3 for xi from 0.025 to 0.5, from float32 round-off and
    the step's own finite-difference Hessian; the reference itself moves by under 6e-4
    for H from 1e-3 to 1e-2. The first-order gradient (no Hessian term) is off by 0.96
    and 0.41 here (0.34 even at the default xi = 0.025), so the 1e-2 tolerance tells them
    apart by a factor of 40. The step also restores the weights bit for bit.
    """
    searcher = _searcher(small_folder, str(tmp_path), fused)
    xi = float(searcher.w_opt.learning_rate.numpy())  # the cosine schedule at step 0
    assert xi == pytest.approx(XI)
    batch = next(iter(searcher.epoch_data(0)))
    weights = [v.numpy() for v in searcher.w_vars]
    alphas = np.concatenate([a.numpy().ravel() for a in searcher.arch.alphas])

    second = _captured_gradient(searcher, lambda: searcher.architecture_step(*batch))
    for before, v in zip(weights, searcher.w_vars):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.name)
    first = _captured_gradient(searcher, lambda: searcher.architect.step(*batch[1]))

    f = _unrolled_loss(searcher, xi, batch)
    fd = np.zeros_like(alphas)
    for i in range(alphas.size):
        step = np.zeros_like(alphas)
        step[i] = H
        fd[i] = (f(alphas + step) - f(alphas - step)) / (2 * H)
    for before, v in zip(weights, searcher.w_vars):
        np.testing.assert_array_equal(v.numpy(), before, err_msg=v.name)

    def error(g):
        return np.linalg.norm(g - fd) / np.linalg.norm(fd)

    assert error(second) < 1e-2, (error(second), error(first))
    assert error(first) > 0.2, (error(second), error(first))  # the Hessian term matters
