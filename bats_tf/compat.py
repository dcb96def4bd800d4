"""Every use of a private TensorFlow or Keras API, in one place.

Written for the pinned versions (``setup.py``: tensorflow 2.21.0, tf-keras 2.21.0); a version
change is checked here first.
"""

from __future__ import annotations

import bats_tf  # noqa: F401

# isort: split
from tensorflow.core.protobuf import config_pb2, rewriter_config_pb2
from tensorflow.python.eager import context


def disable_memory_optimizer() -> None:
    """Turns Grappler's memory optimizer off for the ``tf.function`` calls of this process.

    It has no public switch: it is set in the eager context's function-call options.
    """
    options = context.context().function_call_options
    config = config_pb2.ConfigProto.FromString(options.config_proto_serialized)
    rewrite = config.graph_options.rewrite_options
    rewrite.memory_optimization = rewriter_config_pb2.RewriterConfig.NO_MEM_OPT
    options.config_proto_serialized = config
