"""How fast search, training and deployment run on this machine, beside the alternatives.

Parts (each returns a JSON-able dict; :func:`format_results` prints them as tables):

``peak``       dense float32 matmul GFLOP/s with TensorFlow: the arithmetic rate reachable here.
``supernet``   one search step (architecture step + weight step, as ``Searcher``) in images/s, in
               three formulations of the same supernet: ``fused`` (:mod:`bats_tf.fused`),
               ``grouped`` (reference op layers, grouped ``tf.nn.conv2d``) and ``keras_groups``
               (reference op layers through tf-keras's XLA grouped convolution, at a reduced
               batch as it is very slow). Every configuration runs in a fresh subprocess, so
               trace time, time from process start to the first finished step and peak
               resident memory belong to that configuration alone.
``evalnet``    training images/s (forward, backward, optimizer) of the ``bats_paper`` network,
               alternating with the same network in the first author's PyTorch library ``bnn``.
``inference``  the LCE flatbuffer beside its float TFLite twin (XNNPACK): batch-1 latency at 1
               and 2 threads and file sizes, for a configuration whose binary convolutions all
               become ``LceBconv2d``.

Images/s of a search step is ``batch / step time``: a step reads one batch for the alphas and
one for the weights. The supernet part times ``Searcher``'s own step on one batch of the
embedded data read once, the other parts random tensors: the data pipeline is left out.

Arithmetic is counted from layer shapes (:func:`forward_flops`): a convolution or dense layer
costs 2 FLOPs per multiply-accumulate (a strided dilated convolution counts at the resolution
it runs at: full in the op layers, which subsample its output, the output's in the fused cells,
which subsample its input), a pooling window 1 FLOP per element it reads; normalisation,
activations, shuffles and the weighted sums are not counted. A weight step (forward, input
and weight gradients) costs about 3x its forward pass; an architecture step asks for no
weight gradients, about 2x; one search step about 5x forward. A training step is 3x forward.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from bats_tf.op_specs import OP_SPECS

PARTS = ("peak", "supernet", "evalnet", "inference")
FORMULATIONS = {  # name: (fused, grouped_conv)
    "fused": (True, "direct"),
    "grouped": (False, "direct"),
    "keras_groups": (False, "keras"),
}
SUPERNETS = {  # the tiny search config (configs/search_tiny.cfg) and the paper-scale one
    "tiny": dict(init_channels=8, layers=5, nodes=4, groups=2, batch=32),
    "paper": dict(init_channels=16, layers=8, nodes=4, groups=4, batch=64),
}
QUICK_SUPERNETS = {"quick": dict(init_channels=4, layers=3, nodes=1, groups=2, batch=4)}
QUICK_FORMULATIONS = ("fused", "grouped")  # keras_groups takes minutes even there
EVALNETS = {  # bats_paper network, CIFAR structure
    "C16_L8_G4": dict(init_channels=16, layers=8, groups=4, batch=64),
    "C36_L20_G12": dict(init_channels=36, layers=20, groups=12, batch=64),
}
QUICK_EVALNETS = {"C8_L3_G2": dict(init_channels=8, layers=3, groups=2, batch=4)}
DEPLOY = dict(init_channels=64, layers=8, groups=1)  # every binary conv becomes LceBconv2d
QUICK_DEPLOY = dict(init_channels=32, layers=3, groups=1)
BNN_OPS = {  # our op names -> bnn's (its "sep"/"dil" convs are single grouped convs)
    op: f"{'dil' if s.dilation > 1 else 'sep'}_conv_{s.kernel}x{s.kernel}"
    for op, s in OP_SPECS.items()
    if s.kind == "group_conv"
}
NUM_CLASSES, IMAGE_SIZE = 10, 32
SEARCH_PASSES = 5  # architecture step (2x forward) + weight step (3x forward)
TRAIN_PASSES = 3


def available_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def set_threads(threads: int) -> int:
    """Sets TensorFlow's intra- and inter-op threads (before TF runs anything)."""
    import tensorflow as tf

    threads = threads or available_threads()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return threads


def load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- arithmetic


def _fused_flops(layer) -> float:
    """FLOPs of one example through a :class:`~bats_tf.fused.FusedStateEdges` layer."""

    _, h, w, c_in = layer.input_shape[0]
    n_e, s = len(layer.edges), layer.stride
    oh, ow = -(-h // s), -(-w // s)  # every conv runs at the output resolution
    macs = oh * ow * sum(np.prod(k.shape) for k in getattr(layer, "kernels", []))
    if s > 1 and layer.has_skip:
        macs += oh * ow * (np.prod(layer.fr1.shape) + np.prod(layer.fr2.shape))
    pools = sum(p in layer.primitives for p in ("max_pool_3x3", "avg_pool_3x3"))
    return 2.0 * macs + pools * n_e * oh * ow * c_in * 9


def forward_flops(model) -> float:
    """FLOPs of one example's forward pass, counted from layer shapes (module docstring)."""
    import tensorflow as tf

    from bats_tf.fused import FusedStateEdges
    from bats_tf.network import flat_layers

    pools = (tf.keras.layers.MaxPool2D, tf.keras.layers.AveragePooling2D)
    total = 0.0
    for layer in flat_layers(model):
        if isinstance(layer, FusedStateEdges):
            total += _fused_flops(layer)
        elif isinstance(layer, pools):
            total += np.prod(layer.output_shape[1:]) * np.prod(layer.pool_size)
        elif isinstance(layer, tf.keras.layers.GlobalAveragePooling2D):
            total += np.prod(layer.input_shape[1:])
        else:
            total += 2.0 * _macs(layer)
    return float(total)


def _macs(layer) -> int:
    """MACs of one example's pass through a conv or dense layer (0 for any other layer)."""
    import larq as lq
    import tensorflow as tf

    depthwise = (tf.keras.layers.DepthwiseConv2D, lq.layers.QuantDepthwiseConv2D)
    convs = (tf.keras.layers.Conv2D, lq.layers.QuantConv2D, tf.keras.layers.Dense)
    if isinstance(layer, depthwise):
        per_output = int(np.prod(layer.depthwise_kernel.shape[:2]))  # (k, k, in, multiplier)
    elif isinstance(layer, convs + (lq.layers.QuantDense,)):
        per_output = int(np.prod(layer.kernel.shape[:-1]))  # (k, k, in / groups, out)
    else:
        return 0
    return int(np.prod(layer.output_shape[1:])) * per_output


# ----------------------------------------------------------------------------------- peak


def peak(size: int = 2048, repeats: int = 10) -> dict:
    """Dense float32 ``size x size`` matmul GFLOP/s (best and median of ``repeats``)."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    times = [_timed(lambda: matmul().numpy()) for _ in range(repeats)]
    rate = [2.0 * size**3 / t / 1e9 for t in times]
    return dict(size=size, repeats=repeats, gflops=max(rate), median_gflops=statistics.median(rate))


# ------------------------------------------------------------------------------- supernet


def random_batch(batch: int, seed: int, channels_first: bool = False):
    rng = np.random.RandomState(seed)
    images = rng.uniform(-1, 1, (batch, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    labels = rng.randint(0, NUM_CLASSES, batch).astype("int64")
    return (images.transpose(0, 3, 1, 2).copy() if channels_first else images), labels


def supernet_worker(spec: dict) -> dict:
    """Times the search step of a :class:`~bats_tf.search.Searcher` (run in a fresh process).

    The searcher is the one ``scripts/search.py`` runs, on the embedded ``cifar10_mini`` data
    (two batches per part), so the time to the first step includes reading the data.
    """
    import tensorflow as tf

    from bats_tf.search import SearchConfig, Searcher, use_lean_grappler

    threads = set_threads(spec["threads"])
    use_lean_grappler()  # as scripts/search.py
    imported = time.time() - spec["started_at"]
    b = spec["batch"]
    cfg = SearchConfig(
        dataset="cifar10_mini",
        max_examples=4 * b,
        epochs=1,
        batch_size=b,
        init_channels=spec["init_channels"],
        layers=spec["layers"],
        nodes=spec["nodes"],
        groups=spec["groups"],
        fused=spec["fused"],
        grouped_conv=spec["grouped_conv"],
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        searcher = Searcher(cfg, out, log=lambda *_: None)
    build_s = time.perf_counter() - start
    batch = next(iter(searcher.epoch_data(0)))
    go = tf.constant(0.0)

    def step():
        return searcher.search_step(batch, True, go).numpy()

    profiler = None
    if spec.get("profile_dir"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    trace_s = _timed(lambda: searcher.search_step.get_concrete_function(batch, True, go))
    if profiler:
        profiler.disable()
        profiler.dump_stats(os.path.join(spec["profile_dir"], "trace.pstats"))
    first_s = _timed(step)
    to_first_step_s = time.time() - spec["started_at"]
    if spec["steps"] > 1:
        step()  # warm-up
    times = [_timed(step) for _ in range(spec["steps"])]
    if spec.get("profile_dir"):
        tf.profiler.experimental.start(spec["profile_dir"])
        step()
        tf.profiler.experimental.stop()
    step_s = statistics.median(times)
    forward = forward_flops(searcher.model)
    flops = forward * SEARCH_PASSES * b
    return dict(
        status="ok",
        threads=threads,
        import_s=imported,
        build_s=build_s,
        trace_s=trace_s,
        first_step_s=first_s,
        to_first_step_s=to_first_step_s,
        step_s=step_s,
        step_times_s=times,
        images_per_s=b / step_s,
        forward_gflop_per_image=forward / 1e9,
        step_gflop=flops / 1e9,
        gflops=flops / step_s / 1e9,
        peak_rss_mib=peak_rss_mib(),
        layers_in_model=len(searcher.model.layers),
        load=load(),
    )


def run_worker(spec: dict, timeout: float | None) -> dict:
    """Runs :func:`supernet_worker` in a fresh Python process; returns its result."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        spec = dict(spec, started_at=time.time())
        cmd = [sys.executable, "-m", "bats_tf.benchmark", json.dumps(spec), out]
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return dict(status="timeout", timeout_s=timeout, load=load())
        if proc.returncode or not os.path.exists(out):
            tail = (proc.stderr or "").strip().splitlines()[-5:]
            return dict(status="error", returncode=proc.returncode, error=" | ".join(tail))
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def supernet_part(
    configs: dict,
    formulations=tuple(FORMULATIONS),
    steps: int = 3,
    threads: int = 0,
    keras_batch: int = 8,
    keras_timeout: float | None = 1800,
    timeout: float | None = None,
    peak_gflops: float | None = None,
    profile_dir: str | None = None,
    log=print,
) -> dict:
    """Each configuration in each formulation, one after the other, each in its own process.

    ``keras_groups`` runs at ``min(batch, keras_batch)`` for one timed step (after the first).
    """
    results = {}
    for name, size in configs.items():
        for form in formulations:
            fused, grouped_conv = FORMULATIONS[form]
            keras = grouped_conv == "keras"
            spec = dict(
                size,
                fused=fused,
                grouped_conv=grouped_conv,
                threads=threads,
                steps=1 if keras else steps,
                batch=min(size["batch"], keras_batch) if keras else size["batch"],
                profile_dir=None,
            )
            if profile_dir and form == "fused":
                spec["profile_dir"] = os.path.join(os.path.abspath(profile_dir), name)
                os.makedirs(spec["profile_dir"], exist_ok=True)
            log(f"supernet {name} {form} (batch {spec['batch']}, load {load()[0]}) ...")
            res = run_worker(spec, keras_timeout if keras else timeout)
            res.update(config=name, formulation=form, batch=spec["batch"])
            res["reduced_batch"] = spec["batch"] != size["batch"]
            if peak_gflops and res["status"] == "ok":
                res["fraction_of_peak"] = res["gflops"] / peak_gflops
            log("  " + _one_line(res))
            results[f"{name}/{form}"] = res
    return dict(configs=configs, results=results, ratios=_supernet_ratios(results, configs))


def _one_line(res: dict) -> str:
    if res["status"] != "ok":
        return f"{res['status']}: {res.get('error') or res.get('timeout_s')}"
    return (
        f"{res['images_per_s']:.2f} images/s, step {res['step_s']:.2f} s, "
        f"trace {res['trace_s']:.1f} s, first step {res['first_step_s']:.1f} s, "
        f"{res['peak_rss_mib']:.0f} MiB"
    )


def _supernet_ratios(results: dict, configs: dict) -> dict:
    ratios = {}
    for name in configs:
        fused = results.get(f"{name}/fused", {})
        for other in ("grouped", "keras_groups"):
            res = results.get(f"{name}/{other}", {})
            if fused.get("status") == "ok" and res.get("status") == "ok":
                ratios[f"{name}/fused_vs_{other}"] = fused["images_per_s"] / res["images_per_s"]
    return ratios


# -------------------------------------------------------------------------------- evalnet


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
            t = _timed(lambda step=step: [step() for _ in range(steps)])
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
        log(f"evalnet {name} (batch {b}, load {load()[0]}) ...")
        tf.keras.backend.clear_session()
        model = network.build_network(
            geno,
            NUM_CLASSES,
            IMAGE_SIZE,
            init_channels=size["init_channels"],
            layers=size["layers"],
            groups=size["groups"],
        )
        res = dict(size, genotype=genotype, threads=threads, load=load())
        res["forward_gflop_per_image"] = forward_flops(model) / 1e9
        runners = {}
        tf_step = keras_train_step(model, b)
        res["tf_first_step_s"] = _timed(tf_step)
        runners["bats_tf"] = (tf_step, b)
        error = peer_error
        if error is None:
            try:
                torch_step = torch_train_step(
                    bnn_network(geno, size["init_channels"], size["layers"], size["groups"]), b
                )
                res["torch_first_step_s"] = _timed(torch_step)
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
            res["ours_vs_torch"] = res["bats_tf"]["images_per_s"] / res["bnn_torch"]["images_per_s"]
        res["peak_rss_mib"] = peak_rss_mib()
        log("  " + ", ".join(f"{k} {res[k]['images_per_s']:.2f} images/s" for k in runners))
        results[name] = res
    return dict(results=results)


# ------------------------------------------------------------------------------ inference


def latencies(float_fb: bytes, lce_fb: bytes, image, threads=(1, 2), runs=30) -> dict:
    """Median batch-1 latency (ms) per thread count: float TFLite with XNNPACK, and LCE with
    (``lce``) and without (``lce_no_xnnpack``) XNNPACK for its float ops."""
    import larq_compute_engine as lce

    from bats_tf import export

    image = np.ascontiguousarray(image[None], np.float32)
    result = {"float": {}, "lce": {}, "lce_no_xnnpack": {}}
    for n in threads:
        f = export.float_interpreter(float_fb, n)
        inp = f.get_input_details()[0]["index"]

        def run_float(f=f, inp=inp):
            f.set_tensor(inp, image)
            f.invoke()

        result["float"][str(n)] = export.median_ms(run_float, runs)
        for key, xnnpack in (("lce", True), ("lce_no_xnnpack", False)):
            r = lce.testing.Interpreter(
                lce_fb, num_threads=n, use_indirect_bgemm=True, use_xnnpack=xnnpack
            ).interpreter
            result[key][str(n)] = export.median_ms(lambda r=r: r.predict([image]), runs)
    return result


def trained_like(model, seed: int = 0) -> None:
    """Gives every BatchNorm and PReLU random, distinct parameters, as training would.

    At initialisation all of them are equal, so the converters merge the identical
    BN -> sign -> pad chains of two edges that read one state with one dilated op, and the
    shared ``SpaceToBatchND`` keeps LCE from recognising the dilated binary conv.
    """
    import tensorflow as tf

    rng = np.random.RandomState(seed)
    for layer in model.submodules:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            values = [
                rng.uniform(0.5, 1.5, w.shape)
                if "gamma" in w.name or "variance" in w.name
                else rng.normal(0.0, 0.1, w.shape)
                for w in layer.weights
            ]
            layer.set_weights(values)
        elif isinstance(layer, tf.keras.layers.PReLU):
            layer.set_weights([rng.uniform(0.05, 0.45, w.shape) for w in layer.weights])


def inference_part(size: dict, runs=30, threads=(1, 2), log=print) -> dict:
    """The ``bats_paper`` network (trained-like BN and PReLU parameters) exported to LCE and
    float TFLite, timed at batch 1."""
    import tensorflow as tf

    from bats_tf import export, network

    tf.keras.backend.clear_session()
    log(f"inference C={size['init_channels']} layers={size['layers']} g={size['groups']} ...")
    model = network.build_network(
        "bats_paper",
        NUM_CLASSES,
        IMAGE_SIZE,
        init_channels=size["init_channels"],
        layers=size["layers"],
        groups=size["groups"],
        strict_lce=True,
    )
    trained_like(model)
    start = time.perf_counter()
    float_fb = export.float_tflite(model)
    lce_fb = export.lce_flatbuffer(model)
    convert_s = time.perf_counter() - start
    counts = export.op_counts(lce_fb)
    try:
        export.check_bconvs(model, counts)
        deploy_error = None
    except export.ExportError as e:  # timed all the same, and reported
        deploy_error = str(e)
    image = random_batch(1, 0)[0][0]
    latency = latencies(float_fb, lce_fb, image, threads, runs)
    res = dict(
        size,
        genotype="bats_paper",
        binary_convs=len(network.binary_convs(model)),
        lce_bconv2d=counts.get(export.BCONV, 0),
        lce_ops=counts,
        deploy_error=deploy_error,
        size_bytes={"float": len(float_fb), "lce": len(lce_fb)},
        latency_ms=latency,
        runs=runs,
        convert_s=convert_s,
        forward_gflop_per_image=forward_flops(model) / 1e9,
        load=load(),
    )
    res["lce_speedup"] = {n: latency["float"][n] / latency["lce"][n] for n in latency["float"]}
    res["size_ratio"] = len(float_fb) / len(lce_fb)
    return res


# ---------------------------------------------------------------------------------- report


def _table(header, rows) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [fmt.format(*header), *(fmt.format(*map(str, r)) for r in rows)]


def _f(value, spec=".2f", missing="-"):
    return missing if value is None else format(value, spec)


def format_results(results: dict) -> str:
    """All parts as text tables, each followed by its summary line."""
    out = [f"threads {results['threads']}, load at start {results['load_start']}"]
    if "peak" in results:
        p = results["peak"]
        out += [
            "",
            f"[peak] float32 matmul {p['size']}^2: {p['gflops']:.1f} GFLOP/s best, "
            f"{p['median_gflops']:.1f} median ({results['threads']} threads)",
        ]
    if "supernet" in results:
        out += ["", "[supernet] one search step (architecture + weight step)"]
        rows = []
        for res in results["supernet"]["results"].values():
            ok = res["status"] == "ok"
            g = res.get
            batch = f"{res['batch']}" + (" (reduced)" if res.get("reduced_batch") else "")
            rows.append(
                (
                    res["config"],
                    res["formulation"],
                    batch,
                    _f(g("images_per_s")) if ok else res["status"],
                    _f(g("step_s")),
                    _f(g("trace_s"), ".1f"),
                    _f(g("first_step_s"), ".1f"),
                    _f(g("to_first_step_s"), ".1f"),
                    _f(g("gflops"), ".1f"),
                    _f(100 * g("fraction_of_peak") if g("fraction_of_peak") else None, ".0f"),
                    _f(g("step_gflop"), ".1f"),
                    _f(g("peak_rss_mib"), ".0f"),
                    ",".join(map(str, g("load", [])[:1])),
                )
            )
        out += _table(
            (
                "config",
                "formulation",
                "batch",
                "images/s",
                "step s",
                "trace s",
                "1st call s",
                "start->1st step s",
                "GFLOP/s",
                "% peak",
                "GFLOP/step",
                "peak RSS MiB",
                "load",
            ),
            rows,
        )
        ratios = results["supernet"]["ratios"]
        out.append(
            "summary: "
            + (", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()) or "no ratio measured")
        )
    if "evalnet" in results:
        out += ["", "[evalnet] training step of bats_paper (Adam, cross-entropy)"]
        rows, summary = [], []
        for name, res in results["evalnet"]["results"].items():
            for k in ("bats_tf", "bnn_torch"):
                if k in res:
                    runs = "/".join(f"{v:.2f}" for v in res[k]["runs"])
                    rows.append(
                        (name, k, res["batch"], f"{res[k]['images_per_s']:.2f}", runs,
                         f"{res[k]['gflops']:.1f}")
                    )  # fmt: skip
            if res.get("peer_error"):
                rows.append((name, "bnn_torch", res["batch"], "n/a", res["peer_error"], "-"))
            if "ours_vs_torch" in res:
                summary.append(f"{name} ours vs PyTorch {res['ours_vs_torch']:.2f}x")
        out += _table(("config", "framework", "batch", "images/s", "runs", "GFLOP/s"), rows)
        out.append("summary: " + (", ".join(summary) or "no PyTorch peer"))
    if "inference" in results:
        res = results["inference"]
        out += [
            "",
            f"[inference] bats_paper C={res['init_channels']} layers={res['layers']} "
            f"groups={res['groups']}, batch 1: {res['lce_bconv2d']} LceBconv2d for "
            f"{res['binary_convs']} binary convs",
        ]
        if res.get("deploy_error"):
            out.append(f"NOT fully binary: {res['deploy_error']}")
        lat, size = res["latency_ms"], res["size_bytes"]
        kib = [f"{size[k] / 1024:.1f}" for k in ("float", "lce", "lce")]
        rows = [("size KiB", *kib, "")]
        for n in lat["float"]:
            ms = [f"{lat[k][n]:.2f}" for k in ("float", "lce", "lce_no_xnnpack")]
            rows.append((f"latency {n} thr ms", *ms, f"{res['lce_speedup'][n]:.2f}x"))
        head = ("", "float TFLite", "LCE", "LCE no XNNPACK", "LCE speed-up")
        out += _table(head, rows)
        out.append(
            "summary: LCE vs float "
            + ", ".join(f"{v:.2f}x faster at {n} thr" for n, v in res["lce_speedup"].items())
            + f", {res['size_ratio']:.1f}x smaller"
        )
    if results.get("errors"):
        out += ["", "errors: " + "; ".join(f"{k}: {v}" for k, v in results["errors"].items())]
    return "\n".join(out)


def run(
    parts=PARTS,
    quick: bool = False,
    threads: int = 0,
    steps: int = 3,
    repeats: int = 3,
    evalnet_steps: int = 3,
    keras_batch: int = 8,
    keras_timeout: float | None = 1800,
    supernets=None,
    formulations=None,
    profile_dir: str | None = None,
    log=print,
    save=None,
) -> dict:
    """Runs the chosen parts; returns every figure (the JSON written by the script).

    ``save(results)``, if given, is called after each part with the figures so far.
    """
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown parts {sorted(unknown)} (expected {', '.join(PARTS)})")
    threads = set_threads(threads)
    results = dict(threads=threads, quick=quick, load_start=load(), started=time.time())
    results["errors"] = {}
    if quick:
        steps, repeats, evalnet_steps = 1, 1, 1
    if "peak" in parts:
        results["peak"] = peak(512 if quick else 2048, 2 if quick else 10)
        log(f"peak {results['peak']['gflops']:.1f} GFLOP/s")
        _save(save, results)
    if "supernet" in parts:
        configs = QUICK_SUPERNETS if quick else SUPERNETS
        if supernets:
            configs = {k: configs[k] for k in supernets}
        results["supernet"] = supernet_part(
            configs,
            formulations or (QUICK_FORMULATIONS if quick else tuple(FORMULATIONS)),
            steps=steps,
            threads=threads,
            keras_batch=2 if quick else keras_batch,
            keras_timeout=keras_timeout,
            peak_gflops=results.get("peak", {}).get("gflops"),
            profile_dir=profile_dir,
            log=log,
        )
        _save(save, results)
    if "evalnet" in parts:
        results["evalnet"] = evalnet_part(
            QUICK_EVALNETS if quick else EVALNETS, repeats, evalnet_steps, threads, log=log
        )
        _save(save, results)
    if "inference" in parts:
        try:
            results["inference"] = inference_part(
                QUICK_DEPLOY if quick else DEPLOY, runs=5 if quick else 30, log=log
            )
        except Exception as e:  # noqa: BLE001  (reported, the other parts stand)
            results["errors"]["inference"] = f"{type(e).__name__}: {e}"
    results["load_end"] = load()
    results["elapsed_s"] = time.time() - results["started"]
    return results


def _save(save, results):
    if save is not None:
        save(dict(results, load_end=load(), elapsed_s=time.time() - results["started"]))


def _worker_main(argv):
    spec, out = json.loads(argv[1]), argv[2]
    result = supernet_worker(spec)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    _worker_main(sys.argv)
