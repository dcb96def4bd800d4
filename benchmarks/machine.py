"""The machine a benchmark runs on: threads, load average, peak memory, timing, matmul peak."""

from __future__ import annotations

import os
import resource
import statistics
import time


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


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def timed(fn) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak(size: int = 2048, repeats: int = 10, dtype: str = "float32") -> dict:
    """Dense ``size x size`` matmul GFLOP/s in ``dtype`` (best and median of ``repeats``)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    matmul = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    matmul().numpy()
    times = [timed(lambda: matmul().numpy()) for _ in range(repeats)]
    rate = [2.0 * size**3 / t / 1e9 for t in times]
    return dict(
        size=size,
        repeats=repeats,
        dtype=dtype,
        gflops=max(rate),
        median_gflops=statistics.median(rate),
    )
