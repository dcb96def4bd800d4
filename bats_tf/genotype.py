"""Genotype: the searched cell, the only contract between search and training.

A genotype holds, for the normal and the reduction cell, one ``(op, input)`` pair per
incoming edge (two per intermediate node, node ``i`` owns pairs ``2i`` and ``2i+1``),
the list of states concatenated into the cell output, and the search space it came
from. Inputs index the cell's states: 0 and 1 are the two previous cells, ``2 + i`` is
intermediate node ``i``. It is stored as versioned JSON.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from bats_tf.errors import UsageError

SCHEMA_VERSION = 1
FORMAT = "bats-tf/genotype"
ALPHAS_FILE = "alphas.json"  # a search's alphas, beside its genotype (derive_from_alphas)


class GenotypeError(UsageError):
    """A genotype (or its JSON file) is malformed."""


@dataclasses.dataclass(frozen=True)
class Genotype:
    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]
    search_space: str = "bats"
    deployable: bool = False

    def __post_init__(self):
        for field in ("normal", "reduce"):
            pairs = tuple((str(op), int(i)) for op, i in getattr(self, field))
            object.__setattr__(self, field, pairs)
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))

    @property
    def nodes(self) -> int:
        return len(self.normal) // 2

    def cell(self, reduction: bool) -> tuple[tuple[tuple[str, int], ...], tuple[int, ...]]:
        """The (edges, concat) of the reduction or the normal cell."""
        return (self.reduce, self.reduce_concat) if reduction else (self.normal, self.normal_concat)

    def validate(self, primitives: Sequence[str] | None = None) -> Genotype:
        """Checks structure (and ops, when ``primitives`` is given); returns self."""
        for name in ("normal", "reduce"):
            edges, concat = self.cell(name == "reduce")
            if not edges or len(edges) % 2:
                raise GenotypeError(f"{name}: expected 2 edges per node, got {len(edges)} edges")
            nodes = len(edges) // 2
            if nodes != self.nodes:
                raise GenotypeError(f"{name}: {nodes} nodes, but the normal cell has {self.nodes}")
            for k, (op, inp) in enumerate(edges):
                node = k // 2
                if op == "none":
                    raise GenotypeError(f"{name}[{k}]: op 'none' cannot be a cell edge")
                if primitives is not None and op not in primitives:
                    raise GenotypeError(
                        f"{name}[{k}]: unknown op '{op}' (expected one of "
                        f"{', '.join(p for p in primitives if p != 'none')})"
                    )
                if not 0 <= inp < node + 2:
                    raise GenotypeError(
                        f"{name}[{k}]: input {inp} is impossible for node {node} "
                        f"(allowed 0..{node + 1})"
                    )
            if not concat:
                raise GenotypeError(f"{name}_concat: empty")
            for i in concat:
                if not 0 <= i < nodes + 2:
                    raise GenotypeError(
                        f"{name}_concat: state {i} does not exist (allowed 0..{nodes + 1})"
                    )
            if len(set(concat)) != len(concat):
                raise GenotypeError(f"{name}_concat: repeated states {list(concat)}")
        return self

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "schema_version": SCHEMA_VERSION,
            "search_space": self.search_space,
            "normal": [[op, i] for op, i in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, i] for op, i in self.reduce],
            "reduce_concat": list(self.reduce_concat),
            "deployable": self.deployable,
        }

    @classmethod
    def from_dict(cls, data: dict, source: str = "genotype") -> Genotype:
        if not isinstance(data, dict):
            raise GenotypeError(f"{source}: expected a JSON object")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise GenotypeError(
                f"{source}: schema_version {version!r} is not supported "
                f"(this version of bats-tf reads {SCHEMA_VERSION})"
            )
        missing = [
            k for k in ("normal", "normal_concat", "reduce", "reduce_concat") if k not in data
        ]
        if missing:
            raise GenotypeError(f"{source}: missing field(s) {', '.join(missing)}")
        try:
            genotype = cls(
                normal=tuple((op, i) for op, i in data["normal"]),
                normal_concat=tuple(data["normal_concat"]),
                reduce=tuple((op, i) for op, i in data["reduce"]),
                reduce_concat=tuple(data["reduce_concat"]),
                search_space=str(data.get("search_space", "bats")),
                deployable=data.get("deployable", False),
            )
        except (TypeError, ValueError) as e:
            raise GenotypeError(f"{source}: malformed cell lists ({e})") from None
        if not isinstance(genotype.deployable, bool):
            raise GenotypeError(f"{source}: deployable must be true or false")
        from bats_tf.search_space import primitives_of  # local: avoids importing TF here

        try:
            primitives = primitives_of(genotype.search_space)
        except KeyError as e:
            raise GenotypeError(f"{source}: {e.args[0]}") from None
        try:
            return genotype.validate(primitives)
        except GenotypeError as e:
            raise GenotypeError(f"{source}: {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "genotype") -> Genotype:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"{source}: not valid JSON ({e.msg}, line {e.lineno})") from None
        return cls.from_dict(data, source)

    def save(self, path: str) -> None:
        """Writes the JSON atomically (temporary file, then rename)."""
        from bats_tf.io_utils import atomic_write_text

        atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str) -> Genotype:
        from bats_tf import io_utils

        if not io_utils.exists(path):
            raise GenotypeError(f"{path}: no such genotype file")
        if io_utils.isdir(path):
            raise GenotypeError(f"{path}: a folder, not a genotype file")
        try:
            text = io_utils.read_text(path)
        except (OSError, UnicodeDecodeError) as e:
            raise GenotypeError(f"{path}: cannot be read ({e})") from None
        return cls.from_json(text, source=path)

    def __str__(self) -> str:
        fmt = lambda edges: ", ".join(f"{op}<-{i}" for op, i in edges)  # noqa: E731
        space = self.search_space + (", deployable" if self.deployable else "")
        return (
            f"Genotype[{space}](normal=[{fmt(self.normal)}] "
            f"concat={list(self.normal_concat)}; reduce=[{fmt(self.reduce)}] "
            f"concat={list(self.reduce_concat)})"
        )


def parameter_free_ops(genotype: Genotype) -> dict[str, int]:
    """Parameter-free ops (pools, skips) of the normal and of the reduction cell."""
    from bats_tf.search_space import PARAMETER_FREE

    return {
        name: sum(op in PARAMETER_FREE for op, _ in genotype.cell(name == "reduce")[0])
        for name in ("normal", "reduce")
    }


def derive_cell(
    weights, primitives: Sequence[str], max_parameter_free: int | None = None
) -> tuple[tuple[str, int], ...]:
    """The DARTS rule on one cell's mixing weights ``(edges, ops)``.

    For each node keep the 2 incoming edges from distinct predecessors with the largest
    strongest non-``none`` weight; each keeps its strongest non-``none`` op. With
    ``max_parameter_free``, the chosen edges beyond that many parameter-free ops (pools,
    skips), the weakest first, take their strongest conv instead (P-DARTS caps skips so).
    """
    from bats_tf.op_specs import spec_of

    rows = [list(map(float, r)) for r in weights]
    usable = [k for k, p in enumerate(primitives) if p != "none"]
    convs = [k for k in usable if spec_of(primitives[k]).is_conv]
    chosen, start, node = [], 0, 0  # (row, op index, input)
    while start < len(rows):
        n_in = node + 2
        block = rows[start : start + n_in]
        best = [max(usable, key=lambda k, r=r: r[k]) for r in block]
        strength = [r[b] for r, b in zip(block, best, strict=True)]
        top = sorted(range(n_in), key=lambda j: (-strength[j], j))[:2]
        chosen += [(start + j, best[j], j) for j in sorted(top)]
        start, node = start + n_in, node + 1
    if max_parameter_free is not None and convs:
        free = [c for c in chosen if spec_of(primitives[c[1]]).parameter_free]
        weakest = sorted(free, key=lambda c: (rows[c[0]][c[1]], c[0]))
        for c in weakest[: max(len(free) - max_parameter_free, 0)]:
            conv = max(convs, key=lambda k, r=rows[c[0]]: r[k])
            chosen[chosen.index(c)] = (c[0], conv, c[2])
    return tuple((primitives[k], j) for _, k, j in chosen)


def derive(
    normal_weights,
    reduce_weights,
    search_space: str,
    max_parameter_free: int | None = None,
    deployable: bool = False,
) -> Genotype:
    """The genotype of a supernet's mixing weights (all intermediate nodes concatenated).

    ``max_parameter_free`` caps the pools and skips of each cell (:func:`derive_cell`);
    ``deployable`` is recorded in the genotype.
    """
    from bats_tf.search_space import num_edges, primitives_of

    primitives = primitives_of(search_space)
    nodes = 0
    while num_edges(nodes) < len(normal_weights):
        nodes += 1
    if num_edges(nodes) != len(normal_weights) or len(reduce_weights) != len(normal_weights):
        raise GenotypeError(f"{len(normal_weights)} edge rows do not form a cell")
    concat = tuple(range(2, nodes + 2))
    return Genotype(
        normal=derive_cell(normal_weights, primitives, max_parameter_free),
        normal_concat=concat,
        reduce=derive_cell(reduce_weights, primitives, max_parameter_free),
        reduce_concat=concat,
        search_space=search_space,
        deployable=deployable,
    ).validate(primitives)


def derive_from_alphas(
    record: dict, search_space: str, max_parameter_free: int | None = None, deployable=False
) -> Genotype:
    """The genotype of an ``alphas.json`` record: :func:`derive` on each edge's mixing
    weights ``softmax(alpha / T)``, as the architect derives it."""
    import numpy as np

    def weights(alpha):
        a = np.asarray(alpha, np.float64) / record["temperature"]
        e = np.exp(a - a.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    normal, reduce = weights(record["alpha_normal"]), weights(record["alpha_reduce"])
    return derive(normal, reduce, search_space, max_parameter_free, deployable)


def parameter_free_counts(genotype: Genotype) -> dict[str, int]:
    """Parameter-free ops in each cell: the collapse that BATS's temperature prevents."""
    counts = {}
    for name in ("normal", "reduce"):
        edges, _ = genotype.cell(name == "reduce")
        counts[f"{name}_skip"] = sum(op == "skip_connect" for op, _ in edges)
        counts[f"{name}_pool"] = sum(op.endswith("pool_3x3") for op, _ in edges)
    return counts
