"""The cost term: op costs at each edge's shape, their expectation under the alphas, and how
a search with a cost weight moves towards cheaper cells."""

import bats_tf  # noqa: F401

# isort: split
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_search_config

from bats_tf import cost, metrics, network, supernet
from bats_tf.architect import Architect
from bats_tf.search import Searcher, cost_table
from bats_tf.search_space import get_space, num_edges


def test_edge_shapes_follow_the_macro_structure():
    shapes = cost.edge_shapes(32, 8, 5, 4, 2)
    assert len(shapes["normal"]) == 3 and len(shapes["reduce"]) == 2
    assert all(len(rows) == num_edges(4) for cells in shapes.values() for rows in cells)
    first, last = shapes["normal"][0][0], shapes["normal"][2][0]
    assert first == cost.EdgeShape(8, 32, 1, 2) and last == cost.EdgeShape(32, 8, 1, 2)
    reduce = shapes["reduce"][0]  # 16 channels: inputs 32x32 at stride 2, nodes at 16x16
    assert reduce[0] == reduce[1] == cost.EdgeShape(16, 32, 2, 2)
    assert reduce[2] == reduce[0] and reduce[4] == cost.EdgeShape(16, 16, 1, 2)  # node 1's
    odd = cost.edge_shapes(15, 8, 3, 2, 1)["reduce"][0]
    assert odd[0].size == 15 and odd[4].size == 8
    deployable = cost.edge_shapes(32, 32, 5, 4, 1, deployable=True)
    assert [rows[0].groups for rows in deployable["normal"]] == [1, 2, 4]


def onehot(genotype, table: cost.CostTable) -> list[np.ndarray]:
    """Mixing weights that put all of each genotype edge's weight on its op, zero elsewhere."""
    weights = []
    for cell in ("normal", "reduce"):
        w = np.zeros(table.table.shape[1:], np.float32)
        for k, (op, j) in enumerate(genotype.cell(cell == "reduce")[0]):
            w[num_edges(k // 2) + j, table.primitives.index(op)] = 1.0
        weights.append(w)
    return weights


@pytest.mark.parametrize("kind", ["bops", "ops"])
def test_expected_cost_at_onehot_alphas_is_the_networks_cost(kind):
    """metrics.py's count of a network built from a genotype is the genotype's cost plus a
    part that no cell op changes (stem, cell inputs, classifier): the same for every
    genotype, so the cost term counts exactly what metrics.py reports."""
    shapes = cost.edge_shapes(32, 8, 5, 4, 2)
    table = cost.complexity_table(kind, "bats", shapes)
    fixed = set()
    for seed in range(4):
        genotype = network.random_genotype(seed)
        model = network.build_network(genotype, 10, 32, init_channels=8, layers=5, groups=2)
        figures = metrics.complexity(model)
        expected = table.expected(*onehot(genotype, table))
        assert expected == pytest.approx(table.of_genotype(genotype))
        fixed.add(round(figures[kind] - expected, 3))
    assert len(fixed) == 1 and fixed.pop() > 0


def test_cost_table_orders_the_ops():
    table = cost.complexity_table("bops", "bats", cost.edge_shapes(32, 8, 5, 4, 2))
    col = {op: table.table[..., k] for k, op in enumerate(table.primitives)}
    for free in ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect"):
        assert not col[free].any()  # parameter-free ops (a reduce is real: FLOPs, no BOPs)
    assert (col["group_conv_5x5"] > col["group_conv_3x3"]).all()
    # the dilated 3x3 conv runs as an undilated 3x3 at every edge (at stride 2 subsampled)
    assert np.array_equal(col["dil_group_conv_3x3"], col["group_conv_3x3"])
    shapes = cost.edge_shapes(32, 8, 5, 4, 2)
    ops_table = cost.complexity_table("ops", "bats", shapes)
    skip = ops_table.table[..., table.primitives.index("skip_connect")]
    strided = np.array([s.stride == 2 for s in shapes["reduce"][0]])
    assert strided.sum() == 8 and not skip[0].any()  # a skip costs only as a factorized reduce
    assert skip[1, strided].all() and not skip[1, ~strided].any()


def test_cost_gradient_moves_the_alphas_towards_cheap_ops():
    """With a zero loss gradient, the architecture step follows the cost term alone."""
    space = get_space("bats")
    table = cost.complexity_table("bops", space, cost.edge_shapes(32, 8, 5, 2, 2))
    arch = supernet.Architecture(space, 2, seed=0, temperature=1.0)
    zeros = [tf.zeros_like(a) for a in arch.alphas]
    architect = Architect(
        arch,
        tf.keras.optimizers.SGD(10.0),
        0.0,
        lambda x, y: (0.0, 0.0, [], zeros),
        lambda g: g,
        cost=table,
        cost_weight=1.0,
    )
    before = architect.costs(architect.genotype(space))["expected_bops"]
    assert float(architect.cost_term()) == pytest.approx(before / table.uniform, rel=1e-5)
    for _ in range(20):
        architect.apply(zeros)
    after = architect.costs(architect.genotype(space))
    assert after["expected_bops"] < 0.5 * before
    assert after["genotype_bops"] == 0.0  # every derived edge is parameter-free
    free = architect.mixing_weights()[0][:, [space.primitives.index("max_pool_3x3")]]
    conv = architect.mixing_weights()[0][:, [space.primitives.index("group_conv_5x5")]]
    assert (free > conv).all()


def test_search_logs_costs_and_a_cost_weight_buys_a_cheaper_cell(tiny_folder, tmp_path):
    """Two tiny searches from one seed: with a large cost weight the derived cell costs less;
    both log the expected and the derived cell's OPs each epoch."""
    runs = {}
    for weight in (0.0, 2.0):
        cfg = tiny_search_config(tiny_folder, cost_weight=weight, a_lr=0.1)
        out = str(tmp_path / f"w{weight}")
        genotype = Searcher(cfg, out, log=lambda *a: None).run()
        with open(os.path.join(out, "history.json")) as f:
            history = json.load(f)
        assert all(h["expected_ops"] > 0 and "genotype_ops" in h for h in history)
        table = cost_table(cfg, 16)
        assert history[-1]["genotype_ops"] == pytest.approx(table.of_genotype(genotype))
        runs[weight] = history[-1]
    assert runs[2.0]["expected_ops"] < 0.8 * runs[0.0]["expected_ops"]
    assert runs[2.0]["genotype_ops"] < runs[0.0]["genotype_ops"]


def test_a_search_with_cost_latency_reads_its_table(tiny_folder, tmp_path):
    """cost=latency takes each op's figure from the table file (here written by hand, as a
    phone's would be); a table lacking an entry stops the search before it writes."""
    from bats_tf import latency
    from bats_tf.errors import ConfigError

    path = str(tmp_path / "latency.json")
    probe = tiny_search_config(tiny_folder)
    shapes = cost.edge_shapes(16, probe.init_channels, probe.layers, probe.nodes, probe.groups)
    keys = latency.needed_keys("bats", shapes)
    entries = {k: (2.0 if "conv" in k else 0.5) for k in keys}
    latency.save(path, entries, "a phone")
    cfg = tiny_search_config(tiny_folder, cost="latency", latency_table=path, cost_weight=1.0)
    out = tmp_path / "search"
    Searcher(cfg, str(out), log=lambda *a: None).run()
    with open(out / "history.json") as f:
        last = json.load(f)[-1]
    assert 0 < last["expected_latency"] and "genotype_latency" in last
    table = cost_table(cfg, 16)
    for t, cells in enumerate(shapes.values()):  # 2 ms for a conv in each cell of the type
        assert table.table[t].max() == 2.0 * len(cells)
    latency.save(str(tmp_path / "short.json"), dict(list(entries.items())[1:]), "a phone")
    short = tiny_search_config(
        tiny_folder, cost="latency", latency_table=str(tmp_path / "short.json")
    )
    with pytest.raises(ConfigError, match="lacks 1 of the") as e:
        Searcher(short, str(tmp_path / "other"), log=lambda *a: None)
    assert e.value.param == "latency_table" and not (tmp_path / "other").exists()
