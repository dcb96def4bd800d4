"""What a cell's ops cost, and the expected cost of a supernet: a differentiable cost term.

Every edge of every cell of the supernet has a shape (:class:`EdgeShape`: width, input
size, stride, groups). An op's cost at a shape is counted on the op alone, built as the
final network builds it (binary, no BN after pools), by the counting of
:mod:`bats_tf.metrics` (``bops``, ``ops = bops / 64 + flops``), or read from a latency table
measured with the LCE interpreter (:mod:`bats_tf.latency`). Summing over the cells of a
type gives a table ``(cell type, edge, op)``; the expected cost of the alphas is
``sum softmax(alpha / T) * table`` (as FBNet and ProxylessNAS), and a genotype's cost the
table's entries of its edges. With one-hot alphas on a genotype's edges the two agree, and
a network built from the genotype costs that plus the part the cells' ops do not change
(stem, cell inputs, classifier).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from bats_tf.search_space import Space, get_space, num_edges
from bats_tf.widths import cell_groups, cell_plan

COSTS = ("ops", "bops", "latency")  # what the cost term counts
CELL_TYPES = ("normal", "reduce")


@dataclasses.dataclass(frozen=True)
class EdgeShape:
    """The shape an op runs at: ``channels`` in and out, a square ``size`` input, ``stride``
    1 or 2, and the ``groups`` of its binary grouped convs."""

    channels: int
    size: int
    stride: int
    groups: int

    def key(self, op: str) -> str:
        """The name of ``op`` at this shape in a latency table."""
        return f"{op}/c{self.channels}/s{self.size}/x{self.stride}/g{self.groups}"


def edge_shapes(
    image_size: int,
    init_channels: int,
    layers: int,
    nodes: int,
    groups: int,
    deployable: bool = False,
) -> dict[str, list[list[EdgeShape]]]:
    """Per cell type, for each cell of that type, the shape of each edge (the alphas' rows).

    The CIFAR macro structure of the supernet (:mod:`bats_tf.macro`): a stride-1 stem, so
    the first cells run at ``image_size``; a reduction cell's edges from its two inputs have
    stride 2, the others run at half the size.
    """
    shapes: dict[str, list[list[EdgeShape]]] = {t: [] for t in CELL_TYPES}
    size = image_size
    per_cell = cell_groups(layers, init_channels, groups, deployable)
    for (channels, reduction), g in zip(cell_plan(layers, init_channels), per_cell):
        out_size = -(-size // 2) if reduction else size
        rows = []
        for i in range(nodes):
            for j in range(i + 2):
                stride = 2 if reduction and j < 2 else 1
                rows.append(EdgeShape(channels, size if j < 2 else out_size, stride, g))
        shapes[CELL_TYPES[reduction]].append(rows)
        size = out_size
    return shapes


def distinct_shapes(shapes: dict[str, list[list[EdgeShape]]]) -> list[EdgeShape]:
    """Every shape of :func:`edge_shapes`'s output once, in order of appearance."""
    return list(dict.fromkeys(s for cells in shapes.values() for rows in cells for s in rows))


def op_model(op: str, shape: EdgeShape, op_config):
    """A Keras model of ``op`` alone at ``shape`` (``images -> op output``), batch 1 free."""
    import tensorflow as tf

    from bats_tf import ops

    x = tf.keras.Input((shape.size, shape.size, shape.channels), name="x")
    y = ops.apply_op(op, x, shape.channels, shape.stride, op_config, "op")
    return tf.keras.Model(x, y, name=op)


def deploy_op_config(space: str | Space, groups: int, scaling: bool = True, shortcut: bool = True):
    """How the final network builds the ops of ``space``: fully binary, float32, no pool BN."""
    from bats_tf import ops

    return ops.OpConfig.for_space(space, groups=groups, scaling=scaling, shortcut=shortcut)


def costs_nothing(op: str, shape: EdgeShape) -> bool:
    """``none`` and a skip at stride 1: ops without layers (no table entry)."""
    return op == "none" or (op == "skip_connect" and shape.stride == 1)


@functools.cache
def op_complexity(op: str, shape: EdgeShape, space: str, scaling: bool, shortcut: bool) -> dict:
    """:func:`bats_tf.metrics.complexity` of ``op`` alone at ``shape`` (zeros for ``none`` and
    a skip at stride 1, which have no layers)."""
    if costs_nothing(op, shape):
        return {"bops": 0, "flops": 0, "ops": 0.0}
    from bats_tf.metrics import complexity

    config = deploy_op_config(space, shape.groups, scaling, shortcut)
    return complexity(op_model(op, shape, config))


@dataclasses.dataclass(frozen=True)
class CostTable:
    """The cost of each op at each edge of each cell type, summed over the cells of the type.

    kind: one of :data:`COSTS`.
    table: ``(2, edges, ops)``, normal then reduction cell, columns in the space's order.
    primitives: the space's op names.
    """

    kind: str
    table: np.ndarray
    primitives: tuple[str, ...]

    @property
    def uniform(self) -> float:
        """The expected cost at uniform mixing weights (the alphas' start)."""
        return float(self.table.mean(axis=-1).sum())

    def expected(self, normal_weights, reduce_weights):
        """``sum w * table`` of the mixing weights of both cell types: NumPy ``(edges, ops)``
        arrays (a float), or TensorFlow ``(1, edges, ops)`` tensors (differentiable)."""
        if isinstance(normal_weights, np.ndarray):
            pairs = zip((normal_weights, reduce_weights), self.table)
            return float(sum((w * t).sum() for w, t in pairs))
        import tensorflow as tf

        table = tf.constant(self.table, tf.float32)
        return tf.reduce_sum(normal_weights[0] * table[0]) + tf.reduce_sum(
            reduce_weights[0] * table[1]
        )

    def of_genotype(self, genotype) -> float:
        """The summed cost of the genotype's ops on their edges."""
        total = 0.0
        for t, cell in zip(self.table, CELL_TYPES):
            edges, _ = genotype.cell(cell == "reduce")
            for k, (op, j) in enumerate(edges):
                node = k // 2
                row = num_edges(node) + j
                total += float(t[row, self.primitives.index(op)])
        return total


def complexity_table(kind: str, space: str | Space, shapes, scaling=True, shortcut=True):
    """The :class:`CostTable` of ``bops`` or ``ops`` (:func:`op_complexity`) at ``shapes``."""
    space = get_space(space)
    return _table(
        kind,
        space,
        shapes,
        lambda op, s: op_complexity(op, s, space.name, scaling, shortcut)[kind],
    )


def latency_table(space: str | Space, shapes, milliseconds: dict[str, float]) -> CostTable:
    """The :class:`CostTable` of measured latencies (``key -> ms``, :meth:`EdgeShape.key`);
    ``none`` and a skip at stride 1 cost nothing."""
    space = get_space(space)

    def cost(op, shape):
        return 0.0 if costs_nothing(op, shape) else float(milliseconds[shape.key(op)])

    return _table("latency", space, shapes, cost)


def _table(kind: str, space: Space, shapes, cost) -> CostTable:
    rows = len(shapes["normal"][0])
    table = np.zeros((2, rows, len(space.primitives)), np.float64)
    for t, cell in enumerate(CELL_TYPES):
        for cell_rows in shapes[cell]:
            for e, shape in enumerate(cell_rows):
                for k, op in enumerate(space.primitives):
                    table[t, e, k] += cost(op, shape)
    return CostTable(kind, table, space.primitives)
