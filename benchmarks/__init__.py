"""How fast search, training and deployment run on this machine, beside the alternatives.

Run from a checkout (not installed with ``bats_tf``): ``python -m benchmarks.run``.

Parts (each returns a JSON-able dict; :func:`benchmarks.report.format_results` prints them):

``peak``       dense float32 matmul GFLOP/s with TensorFlow: the arithmetic rate reachable here
               (:mod:`benchmarks.machine`).
``supernet``   one search step (architecture step + weight step, as ``Searcher``) in images/s, in
               three formulations of the same supernet: ``fused`` (:mod:`bats_tf.fused`),
               ``grouped`` (reference op layers, grouped ``tf.nn.conv2d``) and ``keras_groups``
               (reference op layers through tf-keras's XLA grouped convolution, at a reduced
               batch as it is very slow). Every configuration runs in a fresh subprocess, so
               trace time, time from process start to the first finished step and peak
               resident memory belong to that configuration alone (:mod:`benchmarks.supernet`).
``evalnet``    training images/s (forward, backward, optimizer) of the ``bats_paper`` network,
               alternating with the same network in the first author's PyTorch library ``bnn``
               (:mod:`benchmarks.evalnet`).
``grouped``    the search's grouped convolutions against one dense convolution with a
               block-diagonal kernel, float32 and bfloat16 (:mod:`benchmarks.grouped`).
``inference``  the LCE flatbuffer beside its float TFLite twin (XNNPACK): batch-1 latency at 1
               and 2 threads and file sizes, for a configuration whose binary convolutions all
               become ``LceBconv2d`` (:mod:`benchmarks.inference`).

Images/s of a search step is ``batch / step time``: a step reads one batch for the alphas and
one for the weights. The supernet part times ``Searcher``'s own step on one batch of the
embedded data read once, the other parts random tensors (:mod:`benchmarks.inputs`): the data
pipeline is left out. Arithmetic is counted from layer shapes (:mod:`benchmarks.arithmetic`).
"""

import bats_tf  # noqa: F401  (sets TensorFlow's environment before it loads)
