"""The machine a benchmark runs on: threads, load average, CPU time stolen by the host, the
speed of a fixed loop, peak memory, timing, matmul peak."""

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
    """Sets TensorFlow's intra- and inter-op threads and returns the intra-op ones TF runs
    with: once TF has run something, they are fixed and stay as they are."""
    import tensorflow as tf

    threads = threads or available_threads()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TF has started
        threads = tf.config.threading.get_intra_op_parallelism_threads() or available_threads()
    return threads


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(v, 2) for v in os.getloadavg()]


PROC_STAT = "/proc/stat"
TICK_KINDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def cpu_ticks() -> dict | None:
    """The machine's CPU time so far by kind (``/proc/stat``, in clock ticks), or None."""
    try:
        with open(PROC_STAT, encoding="utf-8") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 1 + len(TICK_KINDS) or fields[0] != "cpu":
        return None
    return dict(zip(TICK_KINDS, map(int, fields[1 : 1 + len(TICK_KINDS)])))


def stolen_share(before: dict | None, after: dict | None) -> float | None:
    """The share of CPU time between two :func:`cpu_ticks` readings that the hypervisor gave
    to other virtual machines (``steal``). Above a few percent, what was timed meanwhile ran
    slower than this CPU can."""
    if not before or not after:
        return None
    # A kind's count can step back (idle and iowait do on some kernels): count no change.
    spent = {k: max(after[k] - before[k], 0) for k in TICK_KINDS}
    total = sum(spent.values())
    return spent["steal"] / total if total > 0 else None


def loop_ms(iterations: int = 1_000_000, repeats: int = 3) -> float:
    """Milliseconds a fixed pure-Python loop takes (best of ``repeats``): the machine's speed
    at this moment. A host that slows the machine down without reporting ``steal`` shows here."""

    def loop():
        total = 0
        for i in range(iterations):
            total += i
        return total

    return min(timed(loop) for _ in range(repeats)) * 1e3


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
