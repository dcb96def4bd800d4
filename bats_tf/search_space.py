"""Search spaces: named primitive sets and the precision they are searched in.

``bats``         the BATS space: pooling, skip and binary grouped (dilated) convolutions.
``darts``        the original DARTS space, real-valued (for the paper's ablation).
``darts_binary`` the DARTS space with binary activations and weights.
"""

from __future__ import annotations

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
PARAMETER_FREE = ("max_pool_3x3", "avg_pool_3x3", "skip_connect")

# Whether a space is binary by definition (``darts`` is the real-valued baseline).
BINARY_SPACES = {"bats": True, "darts": False, "darts_binary": True}


def primitives_of(space: str) -> tuple[str, ...]:
    """The primitive names of ``space`` (``none`` first)."""
    try:
        return SPACES[space]
    except KeyError:
        raise KeyError(
            f"unknown search space '{space}' (expected one of {', '.join(SPACES)})"
        ) from None


def num_edges(nodes: int) -> int:
    """Edges of a cell with ``nodes`` intermediate nodes (node i has 2 + i inputs)."""
    return sum(2 + i for i in range(nodes))
