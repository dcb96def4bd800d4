"""The ``evalnet`` part: a training step of the ``bats_paper`` network in tf-keras/Larq (its
binary convolutions in float32 and in exact bfloat16) beside the same network in the first
author's PyTorch library ``bnn`` (float32)."""

from __future__ import annotations

import statistics

from bats_tf.op_specs import OP_SPECS
from benchmarks.arithmetic import TRAIN_PASSES, forward_flops
from benchmarks.inputs import IMAGE_SIZE, NUM_CLASSES, random_batch
from benchmarks.machine import available_threads, load_average, peak_rss_mib, timed

EVALNETS = {  # bats_paper network, CIFAR structure
    "C16_L8_G4": dict(init_channels=16, layers=8, groups=4, batch=64),
    "C36_L20_G12": dict(init_channels=36, layers=20, groups=12, batch=64),
}
QUICK_EVALNETS = {"C8_L3_G2": dict(init_channels=8, layers=3, groups=2, batch=4)}
RUNNERS = {"bats_tf": "float32", "bats_tf_bfloat16": "bfloat16"}  # binary convs' format
BNN_OPS = {  # our op names -> bnn's (its "sep"/"dil" convs are single grouped convs)
    op: f"{'dil' if s.dilation > 1 else 'sep'}_conv_{s.kernel}x{s.kernel}"
    for op, s in OP_SPECS.items()
    if s.kind == "group_conv"
}


def bnn_network(genotype, init_channels: int, layers: int, groups: int):
    """The genotype as the ``bnn`` package's BATS CIFAR network, binarized as its README shows.

    Every convolution but the first (stem) and the last layer (classifier) gets sign inputs,
    XNOR-scaled sign weights (centred) and a learned output scale.
    """
    from bnn import BConfig, prepare_binary_model
    from bnn.models.bats import BATSNetworkCIFAR
    from bnn.models.layers.bats_ops import Genotype as BnnGenotype
    from bnn.ops import BasicInputBinarizer, BasicScaleBinarizer, XNORWeightBinarizer

    def cell(edges):
        return [(BNN_OPS.get(op, op), j) for op, j in edges]

    g = BnnGenotype(
        cell(genotype.normal),
        list(genotype.normal_concat),
        cell(genotype.reduce),
        list(genotype.reduce_concat),
    )
    model = BATSNetworkCIFAR(init_channels, NUM_CLASSES, layers, False, g, groups)
    model.drop_path_prob = 0.0
    bconfig = BConfig(
        activation_pre_process=BasicInputBinarizer,
        activation_post_process=BasicScaleBinarizer,
        weight_pre_process=XNORWeightBinarizer.with_args(center_weights=True),
    )
    return prepare_binary_model(model, bconfig, ignore_layers_name=["_last_", "_first_"])


def keras_train_step(model, batch: int):
    """A ``model.fit`` train step (Adam, cross-entropy) on a fixed random batch.

    It calls the train function ``fit`` runs, on a persistent dataset iterator as ``fit``
    does. (``train_on_batch`` builds a data handler on every call, and about every third
    call then sat idle for ~0.5 s on this machine: C=16 steps took 0.75 or 1.28 s.)
    """
    import tensorflow as tf

    model.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    data = tf.data.Dataset.from_tensors(random_batch(batch, 0)).repeat()
    iterator, train = iter(data), model.make_train_function()
    return lambda: float(train(iterator)["loss"])


def torch_train_step(model, batch: int):
    """The same train step in PyTorch (Adam, cross-entropy)."""
    import torch

    opt = torch.optim.Adam(model.parameters(), 1e-3)
    images, labels = (torch.from_numpy(v) for v in random_batch(batch, 0, channels_first=True))
    model.train()

    def step():
        logits, _ = model(images)
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss.item()

    return step


def _alternate(runners: dict, repeats: int, steps: int) -> dict:
    """Images/s of each runner ``(step, batch)``: runs take turns; median over ``repeats``."""
    rates = {k: [] for k in runners}
    for _ in range(repeats):
        for k, (step, batch) in runners.items():
            t = timed(lambda step=step: [step() for _ in range(steps)])
            rates[k].append(batch * steps / t)
    return {k: dict(images_per_s=statistics.median(v), runs=v) for k, v in rates.items()}


def evalnet_part(configs: dict, repeats=3, steps=1, threads=0, genotype="bats_paper", log=print):
    """Training images/s of the network in tf-keras/Larq beside ``bnn`` (PyTorch)."""
    import tensorflow as tf

    from bats_tf import network

    threads = threads or available_threads()
    geno = network.resolve_genotype(genotype)
    try:
        import torch

        torch.set_num_threads(threads)
        peer_error = None
    except ImportError as e:
        peer_error = f"PyTorch not installed ({e}); pip install '.[bench]'"
    results = {}
    for name, size in configs.items():
        b = size["batch"]
        log(f"evalnet {name} (batch {b}, load {load_average()[0]}) ...")
        tf.keras.backend.clear_session()
        res = dict(size, genotype=genotype, threads=threads, load=load_average())
        runners = {}
        for key, precision in RUNNERS.items():
            model = network.build_network(
                geno,
                NUM_CLASSES,
                IMAGE_SIZE,
                init_channels=size["init_channels"],
                layers=size["layers"],
                groups=size["groups"],
                precision=precision,
            )
            res["forward_gflop_per_image"] = forward_flops(model) / 1e9
            tf_step = keras_train_step(model, b)
            res[f"{key}_first_step_s"] = timed(tf_step)
            runners[key] = (tf_step, b)
        error = peer_error
        if error is None:
            try:
                torch_step = torch_train_step(
                    bnn_network(geno, size["init_channels"], size["layers"], size["groups"]), b
                )
                res["torch_first_step_s"] = timed(torch_step)
                runners["bnn_torch"] = (torch_step, b)
            except Exception as e:  # noqa: BLE001  (any failure of the peer is reported)
                error = f"bnn peer failed: {type(e).__name__}: {e}"
        res["peer_error"] = error
        for runner in runners.values():
            runner[0]()  # warm-up
        res.update(_alternate(runners, repeats, steps))
        gflop = res["forward_gflop_per_image"] * TRAIN_PASSES
        for k in runners:
            res[k]["gflops"] = res[k]["images_per_s"] * gflop
        if "bnn_torch" in res:
            torch_rate = res["bnn_torch"]["images_per_s"]
            res["ours_vs_torch"] = res["bats_tf"]["images_per_s"] / torch_rate
            res["ours_bfloat16_vs_torch"] = res["bats_tf_bfloat16"]["images_per_s"] / torch_rate
        res["peak_rss_mib"] = peak_rss_mib()
        log("  " + ", ".join(f"{k} {res[k]['images_per_s']:.2f} images/s" for k in runners))
        results[name] = res
    return dict(results=results)
