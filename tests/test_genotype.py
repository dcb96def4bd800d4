"""Genotypes: the JSON contract (round trips, validation messages) and the DARTS derivation."""

import bats_tf  # noqa: F401  (selects Keras 2 before TensorFlow is imported)

# isort: split
import dataclasses
import json

import numpy as np
import pytest

from bats_tf.genotype import SCHEMA_VERSION, Genotype, GenotypeError, derive, derive_cell
from bats_tf.search_space import BATS_PRIMITIVES, DARTS_PRIMITIVES, num_edges

P = BATS_PRIMITIVES
GENOTYPE = Genotype(
    normal=(
        ("group_conv_3x3", 0),
        ("skip_connect", 1),
        ("dil_group_conv_5x5", 2),
        ("max_pool_3x3", 0),
    ),
    normal_concat=(2, 3),
    reduce=(
        ("avg_pool_3x3", 1),
        ("group_conv_5x5", 0),
        ("dil_group_conv_3x3", 1),
        ("skip_connect", 2),
    ),
    reduce_concat=(2, 3),
    search_space="bats",
)


def _dict(**changes):
    data = GENOTYPE.to_dict()
    data.update(changes)
    return data


def _edges(cell="normal", **replace):
    """The edges of a cell with edge ``k`` replaced by ``replace[f"e{k}"]``."""
    edges = [list(e) for e in GENOTYPE.to_dict()[cell]]
    for key, edge in replace.items():
        edges[int(key[1:])] = edge
    return edges


def test_json_round_trip():
    text = GENOTYPE.to_json()
    data = json.loads(text)
    assert data["format"] == "bats-tf/genotype"
    assert data["schema_version"] == SCHEMA_VERSION == 1
    assert data["normal"][0] == ["group_conv_3x3", 0]
    again = Genotype.from_json(text)
    assert again == GENOTYPE
    assert again.to_json() == text
    assert again.nodes == 2


def test_save_load_round_trip(tmp_path):
    path = tmp_path / "sub" / "genotype.json"
    GENOTYPE.save(str(path))
    assert Genotype.load(str(path)) == GENOTYPE
    assert path.read_text(encoding="utf-8") == GENOTYPE.to_json()
    assert [p.name for p in path.parent.iterdir()] == ["genotype.json"]  # no temporary left


def test_round_trip_keeps_search_space():
    darts = Genotype(
        normal=(("sep_conv_3x3", 0), ("dil_conv_5x5", 1)),
        normal_concat=(2,),
        reduce=(("max_pool_3x3", 0), ("skip_connect", 1)),
        reduce_concat=(2,),
        search_space="darts",
    )
    assert Genotype.from_json(darts.to_json()) == darts
    assert Genotype.from_json(darts.to_json()).search_space == "darts"


def test_lists_are_normalised_to_tuples():
    same = Genotype(
        normal=[list(e) for e in GENOTYPE.normal],
        normal_concat=list(GENOTYPE.normal_concat),
        reduce=[list(e) for e in GENOTYPE.reduce],
        reduce_concat=list(GENOTYPE.reduce_concat),
    )
    assert same == GENOTYPE
    assert hash(same) == hash(GENOTYPE)
    assert same.cell(True) == (GENOTYPE.reduce, GENOTYPE.reduce_concat)
    assert same.cell(False) == (GENOTYPE.normal, GENOTYPE.normal_concat)
    assert "group_conv_3x3<-0" in str(same)


@pytest.mark.parametrize(
    "data,message",
    [
        (_dict(schema_version=2), "schema_version 2 is not supported"),
        (_dict(schema_version="1"), "schema_version '1' is not supported"),
        ({k: v for k, v in _dict().items() if k != "schema_version"}, "schema_version None"),
        (_dict(normal=_edges(e0=["conv_7x7", 0])), "normal[0]: unknown op 'conv_7x7'"),
        # A DARTS op is unknown in the BATS space.
        (_dict(reduce=_edges("reduce", e3=["sep_conv_3x3", 2])), "unknown op 'sep_conv_3x3'"),
        (_dict(normal=_edges(e1=["skip_connect", 2])), "input 2 is impossible for node 0"),
        (_dict(reduce=_edges("reduce", e3=["skip_connect", 3])), "input 3 is impossible"),
        (_dict(normal=_edges(e0=["skip_connect", -1])), "input -1 is impossible"),
        (_dict(normal=_edges()[:3]), "expected 2 edges per node, got 3 edges"),
        (_dict(normal=[]), "expected 2 edges per node, got 0 edges"),
        (_dict(reduce=_edges("reduce")[:2]), "reduce: 1 nodes, but the normal cell has 2"),
        (_dict(normal=_edges(e2=["none", 1])), "normal[2]: op 'none' cannot be a cell edge"),
        (_dict(normal_concat=[2, 2]), "normal_concat: repeated states [2, 2]"),
        (_dict(reduce_concat=[2, 3, 3]), "reduce_concat: repeated states"),
        (_dict(normal_concat=[2, 4]), "normal_concat: state 4 does not exist"),
        (_dict(reduce_concat=[]), "reduce_concat: empty"),
        (_dict(search_space="nas"), "unknown search space 'nas'"),
        ({k: v for k, v in _dict().items() if k != "reduce_concat"}, "missing field(s)"),
        (_dict(normal=[["skip_connect"], ["skip_connect", 1]]), "malformed cell lists"),
        (_dict(normal=_edges(e0=["skip_connect", "x"])), "malformed cell lists"),
    ],
)
def test_invalid_genotypes(data, message):
    with pytest.raises(GenotypeError) as err:
        Genotype.from_json(json.dumps(data), source="cell.json")
    assert message in str(err.value)
    assert str(err.value).startswith("cell.json: ")


def test_missing_fields_are_all_named():
    data = {k: v for k, v in _dict().items() if k not in ("normal", "reduce_concat")}
    with pytest.raises(GenotypeError, match=r"missing field\(s\) normal, reduce_concat"):
        Genotype.from_dict(data)


@pytest.mark.parametrize(
    "text,message",
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("null", "expected a JSON object"),
    ],
)
def test_not_a_genotype_document(text, message):
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_json(text)


def test_genotype_error_is_a_value_error():
    assert issubclass(GenotypeError, ValueError)


def test_validate_without_primitives_checks_structure_only():
    odd = Genotype(
        normal=(("anything", 0), ("else", 1)),
        normal_concat=(2,),
        reduce=(("anything", 0), ("else", 1)),
        reduce_concat=(2,),
    )
    assert odd.validate() is odd
    with pytest.raises(GenotypeError, match="unknown op 'anything'"):
        odd.validate(P)


@pytest.mark.parametrize(
    "content,message",
    [
        (lambda g: g.to_json().replace('"schema_version": 1', '"schema_version": 7'), "7"),
        (lambda g: "not { json", "not valid JSON"),
        (lambda g: g.to_json().replace("max_pool_3x3", "max_pool_9x9"), "max_pool_9x9"),
    ],
)
def test_load_messages_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content(GENOTYPE), encoding="utf-8")
    with pytest.raises(GenotypeError) as err:
        Genotype.load(str(path))
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_load_missing_and_unreadable_files(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(GenotypeError, match="no such genotype file") as err:
        Genotype.load(str(missing))
    assert str(missing) in str(err.value)
    with pytest.raises(GenotypeError, match=": a folder, not a genotype file$"):
        Genotype.load(str(tmp_path))
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(GenotypeError, match="cannot be read") as err:
        Genotype.load(str(binary))
    assert str(binary) in str(err.value)


def _weights(nodes, fill=0.01):
    return np.full((num_edges(nodes), len(P)), fill, dtype="float32")


def test_derive_cell_two_nodes():
    w = _weights(2)
    # Node 0 (rows 0, 1): both predecessors are kept, each with its strongest op.
    w[0, P.index("group_conv_5x5")] = 0.4
    w[1, P.index("avg_pool_3x3")] = 0.3
    # Node 1 (rows 2, 3, 4): inputs 2 and 0 are the strongest edges.
    w[2, P.index("skip_connect")] = 0.5
    w[3, P.index("max_pool_3x3")] = 0.2
    w[4, P.index("dil_group_conv_3x3")] = 0.6
    assert derive_cell(w, P) == (
        ("group_conv_5x5", 0),
        ("avg_pool_3x3", 1),
        ("skip_connect", 0),
        ("dil_group_conv_3x3", 2),
    )


def test_derive_cell_ignores_none():
    w = _weights(2)
    # 'none' dominates row 0, yet its best real op is kept.
    w[0, P.index("none")] = 0.95
    w[0, P.index("group_conv_3x3")] = 0.03
    w[1, P.index("max_pool_3x3")] = 0.5
    # Node 1: row 2 has the largest weight overall, but on 'none'; its real ops are weak,
    # so the edge strength (best non-'none' weight) ranks it last.
    w[2, P.index("none")] = 0.99
    w[3, P.index("skip_connect")] = 0.2
    w[4, P.index("group_conv_5x5")] = 0.1
    assert derive_cell(w, P) == (
        ("group_conv_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 1),
        ("group_conv_5x5", 2),
    )


def test_derive_cell_never_picks_none_even_when_it_wins_everywhere():
    w = _weights(3)
    w[:, P.index("none")] = 1.0
    edges = derive_cell(w, P)
    assert len(edges) == 6
    assert all(op != "none" for op, _ in edges)


def test_derive_cell_ties_go_to_lower_indices():
    # All equal: the first non-'none' op and the two lowest-numbered inputs win.
    edges = derive_cell(_weights(3, fill=0.125), P)
    assert edges == (
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
    )
    w = _weights(2)
    w[0, [P.index("group_conv_5x5"), P.index("avg_pool_3x3")]] = 0.4  # op tie in one row
    w[2:5, P.index("skip_connect")] = 0.3  # edge tie: inputs 0 and 1 beat 2
    w[4, P.index("none")] = 0.9
    assert derive_cell(w, P)[0] == ("avg_pool_3x3", 0)
    assert derive_cell(w, P)[2:] == (("skip_connect", 0), ("skip_connect", 1))


def test_derive_four_nodes():
    nodes = 4
    rng = np.random.RandomState(0)
    normal = rng.uniform(0.0, 0.05, (num_edges(nodes), len(P))).astype("float32")
    reduce = normal.copy()
    # For node i (inputs 0..i+1), the winners are inputs (i + 1) and (i % 2), with op
    # P[1 + i] on the first and P[7 - i] on the second; 'none' is large everywhere.
    normal[:, 0] = 0.9
    expected = []
    row = 0
    for i in range(nodes):
        wins = sorted([(i + 1, P[1 + i], 0.6), (i % 2, P[7 - i], 0.5)])
        for inp, op, value in wins:
            normal[row + inp, P.index(op)] = value
            expected.append((op, inp))
        row += i + 2
    # The reduction cell prefers the two oldest inputs, with skip_connect.
    reduce[:, P.index("skip_connect")] = 0.2
    for i in range(nodes):
        start = num_edges(i)
        reduce[start : start + 2, P.index("skip_connect")] = 0.7
    g = derive(normal, reduce, "bats")
    assert g.nodes == 4 and g.search_space == "bats"
    assert g.normal == tuple(expected)
    assert g.reduce == (("skip_connect", 0), ("skip_connect", 1)) * 4
    assert g.normal_concat == g.reduce_concat == (2, 3, 4, 5)
    assert Genotype.from_json(g.to_json()) == g  # a derived genotype is valid


def test_derive_two_nodes_darts_space():
    w = np.zeros((num_edges(2), len(DARTS_PRIMITIVES)), dtype="float32")
    w[:, DARTS_PRIMITIVES.index("sep_conv_5x5")] = 1.0
    w[4, DARTS_PRIMITIVES.index("dil_conv_3x3")] = 2.0
    g = derive(w, w, "darts")
    assert g.search_space == "darts" and g.normal_concat == (2, 3)
    assert g.normal == (
        ("sep_conv_5x5", 0),
        ("sep_conv_5x5", 1),
        ("sep_conv_5x5", 0),
        ("dil_conv_3x3", 2),
    )
    assert g.reduce == g.normal


@pytest.mark.parametrize("rows,reduce_rows", [(4, 4), (3, 5), (5, 9), (6, 6)])
def test_derive_rejects_rows_that_are_not_a_cell(rows, reduce_rows):
    with pytest.raises(GenotypeError, match="edge rows do not form a cell"):
        derive(np.ones((rows, len(P))), np.ones((reduce_rows, len(P))), "bats")


def test_max_parameter_free_swaps_the_weakest_pools_for_their_best_conv():
    """Two nodes (5 edges) where a pool wins every edge: the cap keeps the strongest pools
    and gives the weakest chosen edges their strongest conv; the inputs stay."""
    ops = list(P)
    rows = np.full((5, len(ops)), 0.01)
    pool, conv3, conv5 = (
        ops.index(o) for o in ("max_pool_3x3", "group_conv_3x3", "group_conv_5x5")
    )
    rows[:, pool] = [0.5, 0.4, 0.3, 0.45, 0.2]  # node 0: edges 0, 1; node 1: edges 2, 3, 4
    rows[:, conv3] = 0.1
    rows[[1, 3], conv5] = 0.2  # the best conv of edges 1 and 3 is the 5x5
    uncapped = derive_cell(rows, ops)
    assert uncapped == (("max_pool_3x3", 0), ("max_pool_3x3", 1), ("max_pool_3x3", 0),
                        ("max_pool_3x3", 1))  # fmt: skip
    assert derive_cell(rows, ops, 4) == uncapped
    assert derive_cell(rows, ops, 2) == (
        ("max_pool_3x3", 0),
        ("group_conv_5x5", 1),  # 0.4, the weakest two: 0.4 and 0.3
        ("group_conv_3x3", 0),
        ("max_pool_3x3", 1),
    )
    assert [op for op, _ in derive_cell(rows, ops, 0)] == [
        "group_conv_3x3", "group_conv_5x5", "group_conv_3x3", "group_conv_5x5"
    ]  # fmt: skip


def test_deployable_is_saved_and_read():
    genotype = dataclasses.replace(GENOTYPE, deployable=True)
    loaded = Genotype.from_json(genotype.to_json())
    assert loaded.deployable and loaded == genotype and "deployable" in str(loaded)
    assert not Genotype.from_dict({**GENOTYPE.to_dict(), "deployable": False}).deployable
    legacy = {k: v for k, v in GENOTYPE.to_dict().items() if k != "deployable"}
    assert Genotype.from_dict(legacy) == GENOTYPE
    with pytest.raises(GenotypeError, match="deployable must be true or false"):
        Genotype.from_dict({**GENOTYPE.to_dict(), "deployable": "yes"})
