"""Cell diagrams (like the DARTS paper figures) and heat maps of architecture weights.

Drawn with matplotlib's Agg canvas only (no pyplot, no graphviz binary, no TensorFlow), so
the module imports fast and works on headless machines.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Circle, FancyArrowPatch, Rectangle
from matplotlib.transforms import Bbox

from bats_tf.io_utils import atomic_write_bytes

INPUT_COLOR, NODE_COLOR, OUTPUT_COLOR = "#b4eeb4", "#add8e6", "#eee8aa"
_DX, _DY, _R = 3.2, 1.5, 0.42  # layer spacing, row spacing and node radius (data units)
_SCALE, _DPI, _MARGIN = 0.8, 120, 0.3  # inches per data unit, PNG resolution, border
_RADS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.8)  # arc curvatures tried when routing an edge
_LABEL_TS = (0.5, 0.44, 0.56, 0.38, 0.62, 0.32, 0.68, 0.26, 0.74, 0.2, 0.8)  # label spots on an arc
_CROSS_COST = 150.0  # score of one sampled point of another arc under a label (pixels^2)


def _state_name(state: int) -> str:
    return f"$c_{{k-{2 - state}}}$" if state < 2 else f"node {state - 2}"


def _layout(edges, concat) -> list[np.ndarray]:
    """Positions of the states (inputs, nodes, output last), in layers from left to right.

    A node's layer is one past its deepest input; within a layer nodes sit near the mean
    height of their inputs. Gaps crossed by many labelled edges are widened.
    """
    nodes = len(edges) // 2
    sources = [[], []] + [[j for _, j in edges[2 * i : 2 * i + 2]] for i in range(nodes)]
    sources.append(list(concat))
    layer = [0, 0]
    for src in sources[2:-1]:
        layer.append(1 + max(layer[j] for j in src))
    layer.append(max(layer) + 1)
    load = np.zeros(layer[-1] + 1)
    for dst, src in enumerate(sources[2:-1], start=2):
        for j in src:
            load[layer[j] + 1 : layer[dst] + 1] += 1 / (layer[dst] - layer[j])
    x = np.cumsum(_DX * np.maximum(1.0, load / 4))
    y = [_DY / 2, -_DY / 2] + [0.0] * (nodes + 1)
    for level in range(1, layer[-1] + 1):
        members = [s for s in range(len(layer)) if layer[s] == level]
        want = {s: float(np.mean([y[j] for j in sources[s]])) for s in members}
        members.sort(key=lambda s: (-want[s], s))
        placed = [want[members[0]]]
        for s in members[1:]:
            placed.append(min(want[s], placed[-1] - _DY))
        shift = np.mean([want[s] for s in members]) - np.mean(placed)
        for s, p in zip(members, placed, strict=True):
            y[s] = p + shift
    return [np.array([x[lv] - x[0], yv]) for lv, yv in zip(layer, y, strict=True)]


def _curve(p0: np.ndarray, p2: np.ndarray, rad: float, t) -> np.ndarray:
    """Points of matplotlib's ``arc3`` connection (a quadratic Bezier) at parameters ``t``."""
    (x1, y1), (x2, y2) = p0, p2
    ctrl = np.array([(x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1)])
    t = np.asarray(t, dtype=float)[:, None]
    return (1 - t) ** 2 * p0 + 2 * t * (1 - t) * ctrl + t**2 * p2


def _route(pos, src: int, dst: int, used: set) -> float:
    """The least curved arc from ``src`` to ``dst`` that clears every other node."""
    others = np.array([p for s, p in enumerate(pos) if s not in (src, dst)])
    # Bulge away from the middle of the drawing first: upper edges up, lower edges down.
    up = (pos[src][1] + pos[dst][1]) / 2 >= 0
    sign = -1.0 if (pos[dst][0] >= pos[src][0]) == up else 1.0
    best = (-np.inf, 0.0)
    for rad in (s * r for r in _RADS for s in (sign, -sign) if r or s == sign):
        if (src, dst, rad) in used:
            continue
        pts = _curve(pos[src], pos[dst], rad, np.linspace(0, 1, 60))
        clear = np.linalg.norm(pts[:, None] - others[None], axis=-1).min() if len(others) else 9
        if clear > _R + 0.25:
            return rad
        best = max(best, (clear, rad))
    return best[1]


def _cell_figure(genotype, reduction: bool) -> Figure:
    genotype.validate()
    edges, concat = genotype.cell(reduction)
    pos = _layout(edges, concat)
    out = len(pos) - 1
    arcs = [(j, 2 + k // 2, op) for k, (op, j) in enumerate(edges)]
    arcs += [(s, out, None) for s in concat]
    used: set = set()
    for i, (src, dst, op) in enumerate(arcs):
        rad = _route(pos, src, dst, used)
        used.add((src, dst, rad))
        arcs[i] = (src, dst, op, rad)

    pts = np.concatenate(
        [np.array(pos) + d for d in ((-_R, -_R), (_R, _R))]
        + [_curve(pos[s], pos[d], r, np.linspace(0, 1, 21)) for s, d, _, r in arcs]
    )
    fig = Figure(dpi=_DPI, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()

    def fit(lo, hi):
        lo, hi = lo - _MARGIN, hi + _MARGIN
        ax.set_xlim(lo[0], hi[0])
        ax.set_ylim(lo[1], hi[1])
        fig.set_size_inches(*((hi - lo) * _SCALE))

    fit(pts.min(0), pts.max(0))
    circles = []
    for s, p in enumerate(pos):
        color = INPUT_COLOR if s < 2 else OUTPUT_COLOR if s == out else NODE_COLOR
        circles.append(ax.add_patch(Circle(p, _R, fc=color, ec="0.2", lw=1.2, zorder=3)))
        name = "$c_{k}$" if s == out else _state_name(s) if s < 2 else str(s - 2)
        ax.text(*p, name, ha="center", va="center", fontsize=13, zorder=5)
    for src, dst, op, rad in arcs:
        arrow = FancyArrowPatch(
            pos[src],
            pos[dst],
            connectionstyle=f"arc3,rad={rad}",
            arrowstyle="-|>",
            mutation_scale=14,
            lw=1.3 if op else 1.0,
            color="0.2" if op else "0.55",
            patchA=circles[src],
            patchB=circles[dst],
            shrinkA=0,
            shrinkB=1,
            zorder=2,
        )
        ax.add_patch(arrow)

    # Labels: greedily take the spot along each arc that covers the least of the nodes, the
    # other labels and the other arcs, so that each label sits on its own arc only.
    renderer = canvas.get_renderer()
    taken = [c.get_window_extent(renderer) for c in circles]
    samples = [
        ax.transData.transform(_curve(pos[s], pos[d], r, np.linspace(0, 1, 120)))
        for s, d, _, r in arcs
    ]
    for a, (src, dst, op, rad) in enumerate(arcs):
        if not op:
            continue
        others = np.concatenate(samples[:a] + samples[a + 1 :])
        box_style = dict(boxstyle="round,pad=0.15", fc="white", ec="0.7", lw=0.5, alpha=0.9)
        text = ax.text(0, 0, op, ha="center", va="center", fontsize=9, zorder=4, bbox=box_style)
        best = None
        for p in _curve(pos[src], pos[dst], rad, _LABEL_TS):
            text.set_position(p)
            box = text.get_window_extent(renderer).padded(4)
            hits = [Bbox.intersection(box, b) for b in taken]
            area = [0.0 if h is None else h.width * h.height for h in hits]
            score = 10 * sum(area[: len(circles)]) + sum(area[len(circles) :])
            (x0, y0), (x1, y1) = box.get_points()
            inside = (others >= (x0, y0)) & (others <= (x1, y1))
            score += _CROSS_COST * inside.all(axis=1).sum()
            if best is None or score < best[0]:
                best = (score, p, box)
            if not score:
                break
        text.set_position(best[1])
        taken.append(best[2])
    corners = ax.transData.inverted().transform(
        np.concatenate([b.corners() for b in taken[len(circles) :]] or [np.zeros((0, 2))])
    )
    fit(np.vstack([pts, corners]).min(0), np.vstack([pts, corners]).max(0))
    return fig


def _render(fig: Figure, fmt: str) -> bytes:
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "bats-tf"}):
        metadata = {"Date": None} if fmt == "svg" else None
        fig.savefig(buf, format=fmt, dpi=_DPI, facecolor="white", metadata=metadata)
    return buf.getvalue()


def _to_array(fig: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def plot_cell(genotype, reduction: bool, path: str) -> None:
    """Draws the normal or reduction cell to ``path`` (.png or .svg), atomically."""
    fmt = os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("png", "svg"):
        raise ValueError(f"{path}: cell diagrams are written as .png or .svg")
    atomic_write_bytes(path, _render(_cell_figure(genotype, reduction), fmt))


def write_cell_diagrams(genotype, folder: str, prefix: str = "") -> dict[str, str]:
    """Writes ``{prefix}{normal,reduce}.{png,svg}`` into ``folder``; returns the paths by key."""
    paths = {}
    for cell in ("normal", "reduce"):
        fig = _cell_figure(genotype, cell == "reduce")
        for fmt in ("png", "svg"):
            path = paths[f"{cell}_{fmt}"] = os.path.join(folder, f"{prefix}{cell}.{fmt}")
            atomic_write_bytes(path, _render(fig, fmt))
    return paths


def cell_image(genotype, reduction: bool) -> np.ndarray:
    """The cell diagram as an HxWx3 uint8 array (e.g. for a TensorBoard image summary)."""
    return _to_array(_cell_figure(genotype, reduction))


def genotype_markdown(genotype) -> str:
    """The genotype as one compact Markdown table (cell, node, input, op) for TensorBoard."""
    rows = ["| cell | node | input | op |", "| --- | --- | --- | --- |"]
    for cell in ("normal", "reduce"):
        edges, concat = genotype.cell(cell == "reduce")
        for k, (op, j) in enumerate(edges):
            source = f"c_{{k-{2 - j}}}" if j < 2 else f"node {j - 2}"
            rows.append(f"| {cell} | {k // 2} | {source} | {op} |")
        rows.append(f"| {cell} | out | {', '.join(str(c - 2) for c in concat)} | concat |")
    return "\n".join(rows)


def derived_cells(genotype, reduction: bool, primitives: Sequence[str]) -> set[tuple[int, int]]:
    """The (edge row, primitive column) pairs a genotype's cell took, in heat-map order."""
    edges, _ = genotype.cell(reduction)
    first_row = lambda node: sum(i + 2 for i in range(node))
    return {(first_row(k // 2) + j, list(primitives).index(op)) for k, (op, j) in enumerate(edges)}


def alpha_heatmap(
    weights: np.ndarray,
    primitives: Sequence[str],
    title: str,
    nodes: int,
    derived: set[tuple[int, int]] = frozenset(),
) -> np.ndarray:
    """Heat map (HxWx3 uint8) of per-edge op weights on a fixed 0-1 colour scale.

    Rows are the edges in search order (``node i <- j`` for j = c_{k-2}, c_{k-1}, node 0..i-1),
    columns the primitives. The ``derived`` (row, column) pairs, the ops the genotype took, are
    framed in red and their values bold; one scale lets epochs be compared side by side.
    """
    w = np.asarray(weights, dtype=float)
    rows = [(i, j) for i in range(nodes) for j in range(i + 2)]
    if w.shape != (len(rows), len(primitives)):
        raise ValueError(
            f"weights of shape {w.shape} do not match {nodes} nodes "
            f"({len(rows)} edges) x {len(primitives)} primitives"
        )
    fig = Figure(
        figsize=(2.6 + 0.8 * len(primitives), 1.6 + 0.3 * len(rows)),
        dpi=100,
        facecolor="white",
        layout="constrained",
    )
    ax = fig.add_subplot()
    image = ax.imshow(w, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for (r, c), v in np.ndenumerate(w):
        taken = (r, c) in derived
        ax.text(
            c,
            r,
            f"{v:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="black" if v > 0.6 else "white",
            fontweight="bold" if taken else "normal",
        )
        if taken:
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, ec="red", lw=1.8))
    ax.set_xticks(range(len(primitives)), list(primitives), fontsize=8)
    ax.tick_params(axis="x", labelrotation=35)
    for label in ax.get_xticklabels():
        label.set(ha="right", rotation_mode="anchor")
    ax.set_yticks(range(len(rows)), [f"node {i} <- {_state_name(j)}" for i, j in rows], fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    return _to_array(fig)
