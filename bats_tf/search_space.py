"""Search spaces: named primitive sets and the precision they are searched in.

``bats``         the BATS space: pooling, skip and binary grouped (dilated) convolutions.
``darts``        the original DARTS space, real-valued (for the paper's ablation).
``darts_binary`` the DARTS space with binary activations and weights.

Public entry points take a space by name or as a :class:`Space`; :func:`get_space` resolves a
name once and the object travels down from there.
"""

from __future__ import annotations

import dataclasses

from bats_tf.op_specs import OP_SPECS, OpSpec

BATS_PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "group_conv_3x3",
    "group_conv_5x5",
    "dil_group_conv_3x3",
    "dil_group_conv_5x5",
)

DARTS_PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)

SPACES = {
    "bats": BATS_PRIMITIVES,
    "darts": DARTS_PRIMITIVES,
    "darts_binary": DARTS_PRIMITIVES,
}

# Ops without weights: a cell made of them is the collapse BATS's temperature counters.
PARAMETER_FREE = tuple(op for op, spec in OP_SPECS.items() if spec.parameter_free)

# Whether a space is binary by definition (``darts`` is the real-valued baseline).
BINARY_SPACES = {"bats": True, "darts": False, "darts_binary": True}


@dataclasses.dataclass(frozen=True)
class Space:
    """A resolved search space.

    name: its name in :data:`SPACES`.
    primitives: its op names, ``none`` first.
    specs: the :class:`~bats_tf.op_specs.OpSpec` of each primitive, in the same order.
    binary: whether its ops are binary by default (``darts`` is real-valued).
    """

    name: str
    primitives: tuple[str, ...]
    specs: tuple[OpSpec, ...]
    binary: bool

    def spec(self, op: str) -> OpSpec:
        """The spec of primitive ``op`` of this space."""
        return self.specs[self.primitives.index(op)]

    def __str__(self) -> str:
        return self.name


def primitives_of(space: str | Space) -> tuple[str, ...]:
    """The primitive names of ``space`` (``none`` first)."""
    if isinstance(space, Space):
        return space.primitives
    try:
        return SPACES[space]
    except KeyError:
        raise KeyError(
            f"unknown search space '{space}' (expected one of {', '.join(SPACES)})"
        ) from None


def get_space(space: str | Space) -> Space:
    """The :class:`Space` named ``space`` (a :class:`Space` is returned as is).

    # Arguments
        space: a name of :data:`SPACES`, or a resolved space.

    # Raises
        KeyError: for an unknown name.
    """
    if isinstance(space, Space):
        return space
    primitives = primitives_of(space)
    specs = tuple(OP_SPECS[op] for op in primitives)
    return Space(space, primitives, specs, BINARY_SPACES[space])


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes (node i has 2 + i inputs)."""
    return sum(2 + i for i in range(nodes))
