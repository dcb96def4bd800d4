"""``tf.distribute`` strategies by name, and the ``TF_CONFIG`` checks made before TensorFlow
loads (no absl; TensorFlow is imported only to make a strategy)."""

from __future__ import annotations

import functools
import json
import os

from bats_tf.errors import ConfigError, UsageError

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


def check_strategy(name: str) -> None:
    """Checks the strategy name and, for multi_worker, the TF_CONFIG cluster."""
    if name not in STRATEGIES:
        raise ConfigError("strategy", f"expected one of {', '.join(STRATEGIES)}", name)
    if name != "multi_worker" or not os.environ.get("TF_CONFIG"):
        return
    try:
        config = json.loads(os.environ["TF_CONFIG"])
        cluster, task = config["cluster"], config["task"]
        kind, index = task["type"], int(task["index"])
        hosts = cluster[kind]
    except (ValueError, KeyError, TypeError) as e:
        raise UsageError(
            f"TF_CONFIG: expected JSON with cluster and task (type, index) ({e!r})"
        ) from None
    if not 0 <= index < len(hosts):
        raise UsageError(
            f"TF_CONFIG: task {kind}:{index} is not in the cluster ({len(hosts)} {kind} tasks)"
        )


def is_chief(strategy: str) -> bool:
    """Whether this process writes the run's outputs: always, but for a multi-worker task
    other than the chief (the "chief" task, else worker 0) named by ``TF_CONFIG``."""
    if strategy != "multi_worker" or not os.environ.get("TF_CONFIG"):
        return True
    config = json.loads(os.environ["TF_CONFIG"])  # checked by check_strategy
    task = config["task"]
    chief = "chief" if "chief" in config["cluster"] else "worker"
    return (task["type"], int(task["index"])) == (chief, 0)


def make_strategy(name: str):
    """A ``tf.distribute`` strategy by name: default, mirrored, multi_worker, tpu.

    ``mirrored`` uses every GPU, or every logical CPU device when there is no GPU.
    ``multi_worker`` reads the cluster from ``TF_CONFIG`` and must be made before TensorFlow
    runs anything. A process makes each strategy once and gets it back on later calls (two
    multi-worker strategies in one process deadlock each other's collectives).
    """
    import tensorflow as tf

    check_strategy(name)
    return tf.distribute.get_strategy() if name == "default" else _distributed(name)


@functools.cache
def _distributed(name: str):
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as e:
        raise ConfigError("strategy", f"no TPU found ({e})", "tpu") from None
    return tf.distribute.TPUStrategy(resolver)


def task_of(strategy) -> tuple[str | None, int, bool]:
    """This task of a made strategy as "type:index" (None on a single machine), the number
    of workers, and whether this task is the chief (the "chief" task, else worker 0)."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return None, 1, True
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
    if not resolver.task_type or workers <= 1:
        return None, 1, True
    chief = "chief" if "chief" in spec else "worker"
    task = (resolver.task_type, resolver.task_id)
    return f"{task[0]}:{task[1]}", workers, task == (chief, 0)
