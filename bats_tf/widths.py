"""Cell widths and groups of the macro structure, and the LCE-deployable group rule (no
TensorFlow).

Larq Compute Engine turns a binary convolution into ``LceBconv2d`` only when each of its
groups has a multiple of :data:`LCE_CHANNELS` input channels; otherwise it runs as a float
convolution. A *deployable* network takes the group count of each cell from its width,
``width // LCE_CHANNELS`` (32 input channels per group: the most groups LCE binarizes), and
needs widths that make every binary convolution's input a multiple of 32: the cells'
widths, and the stem's (``stem_multiplier * C``) and the cells' outputs that the 1x1 binary
convs of the next cells read.
"""

from __future__ import annotations

from bats_tf.errors import ConfigError

LCE_CHANNELS = 32  # LCE binarizes a grouped conv only with a multiple of this per group


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth."""
    return (layers // 3, 2 * layers // 3) if layers >= 3 else ()


def cell_plan(layers: int, init_channels: int) -> list[tuple[int, bool]]:
    """``(channels, reduction)`` of each cell: the width doubles at each reduction cell.

    # Arguments
        layers: number of cells.
        init_channels: width of the first cells.
    """
    plan, channels, reductions = [], init_channels, reduction_layers(layers)
    for i in range(layers):
        reduction = i in reductions
        channels *= 2 if reduction else 1
        plan.append((channels, reduction))
    return plan


def cell_groups(layers: int, init_channels: int, groups: int, deployable: bool) -> list[int]:
    """Groups of each cell's binary grouped convs: ``groups``, or deployable's per width."""
    if not deployable:
        return [groups] * layers
    return [channels // LCE_CHANNELS for channels, _ in cell_plan(layers, init_channels)]


def deployable_widths(init_channels: int, stem_multiplier: int, nodes: int) -> bool:
    """Whether every binary conv's input channels (per group) can be a multiple of 32."""
    return (
        init_channels % LCE_CHANNELS == 0
        and (stem_multiplier * init_channels) % LCE_CHANNELS == 0
        and (nodes * init_channels) % LCE_CHANNELS == 0
    )


def check_deployable(init_channels: int, stem_multiplier: int, nodes: int, space="bats") -> None:
    """Raises a :class:`ConfigError` unless a deployable network of ``space`` (a name) can
    have these widths; a width too narrow is named with the smallest width that works."""
    if space != "bats":
        raise ConfigError("deployable", "LCE has no binary depthwise conv: BATS space only", True)
    if deployable_widths(init_channels, stem_multiplier, nodes):
        return
    smallest = next(
        c
        for c in range(LCE_CHANNELS, LCE_CHANNELS * 64 + 1, LCE_CHANNELS)
        if deployable_widths(c, stem_multiplier, nodes)
    )
    raise ConfigError(
        "init_channels",
        f"too narrow for deployable (LCE binarizes a conv only with a multiple of "
        f"{LCE_CHANNELS} input channels per group); the smallest width that works is {smallest}",
        init_channels,
    )
