"""IR: immutable ops, shapes, and a verifier that names the offending node."""

import dataclasses

import networkx as nx
import numpy as np
import pytest

from snncompile.errors import GraphError
from snncompile.ir import (
    IF, Add, AvgPool2d, Conv2d, Dense, Flatten, GraphBuilder, Input, LoihiNeuron, Output, ReLU, Verifier, chain,
)
from snncompile.targets.loihi2 import LOIHI2


def test_ops_are_immutable():
    op = Dense(weight=np.ones((2, 3)), bias=np.zeros(2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        op.weight = np.zeros((2, 3))
    with pytest.raises(ValueError):
        op.weight[0, 0] = 5.0  # read-only array
    src = np.ones((2, 3))
    op2 = Dense(weight=src)
    src[0, 0] = 7.0  # the op holds its own copy
    assert op2.weight[0, 0] == 1.0


def test_owned_arrays_are_taken_without_a_copy():
    import torch

    from snncompile.ir.ops import owned

    fresh = owned(np.ones((2, 3)) * 2)  # a fresh result handed over: read-only, shared
    assert Dense(weight=fresh).weight is fresh and not fresh.flags.writeable
    tensor_view = owned(torch.ones(2, 3, dtype=torch.float64).numpy())  # a fresh tensor's memory
    assert Dense(weight=tensor_view).weight is tensor_view
    model = torch.ones(2, 3, dtype=torch.float64)  # a tensor someone else holds: copied
    view = model.numpy()
    view.setflags(write=False)
    op = Dense(weight=view)
    model[0, 0] = 7.0
    assert op.weight is not view and op.weight[0, 0] == 1.0


def test_check_runs_once_per_op():
    op = Dense(weight=np.array([[np.nan]]))
    assert op.checked() == op.check() == ["weight has non-finite values"]
    calls = []
    object.__setattr__(op, "check", lambda: calls.append(1) or [])  # not asked again: ops never change
    assert op.checked() == ["weight has non-finite values"] and not calls


def test_graph_is_frozen_and_edits_return_new_graphs():
    g = chain((3,), [("fc", Dense(weight=np.ones((2, 3))))])
    with pytest.raises(nx.NetworkXError):
        g.nx.add_node("x")
    builder = g.edit()
    builder.replace("fc", Dense(weight=np.ones((4, 3))))
    g2 = builder.build()
    assert g.shape("fc") == (2,) and g2.shape("fc") == (4,)


def test_shapes_are_inferred():
    g = chain((1, 8, 8), [
        ("conv", Conv2d(weight=np.ones((4, 1, 3, 3)), padding=1, stride=2)),
        ("relu", ReLU()),
        ("pool", AvgPool2d(kernel=2, stride=2)),
        ("flat", Flatten()),
        ("fc", Dense(weight=np.ones((10, 16)))),
    ])
    assert [g.shape(n) for n in ("conv", "pool", "flat", "fc")] == [(4, 4, 4), (4, 2, 2), (16,), (10,)]


def test_shape_error_names_the_node():
    with pytest.raises(GraphError, match="node 'fc2'"):
        chain((3,), [("fc1", Dense(weight=np.ones((2, 3)))), ("fc2", Dense(weight=np.ones((2, 5))))])


def test_add_needs_two_equal_inputs():
    b = GraphBuilder()
    b.add("input", Input(shape=(3,)))
    b.add("a", Dense(weight=np.ones((2, 3))), ["input"])
    b.add("c", Dense(weight=np.ones((4, 3))), ["input"])
    b.add("sum", Add(), ["a", "c"])
    b.add("output", Output(), ["sum"])
    with pytest.raises(GraphError, match="node 'sum'.*equal shapes"):
        b.build()


@pytest.mark.parametrize("bad,match", [
    (IF(threshold=np.array(-1.0)), "node 'neuron': threshold must be positive"),
    (Dense(weight=np.full((3, 3), np.nan)), "node 'neuron': weight has non-finite values"),
])
def test_verifier_names_bad_parameters(bad, match):
    with pytest.raises(GraphError, match=match):
        chain((3,), [("neuron", bad)])


def test_verifier_finds_dead_nodes_and_fixed_point_violations():
    b = GraphBuilder()
    b.add("input", Input(shape=(2,)))
    b.add("dead", Dense(weight=np.ones((2, 2))), ["input"])
    b.add("output", Output(), ["input"])
    problems = Verifier().problems(b.build(verify=False))
    assert ("dead", "Dense output is unused (dead node)") in problems

    vth = np.full((2,), LOIHI2.vth.max + 1)  # one past 17 bits
    bad = LoihiNeuron(vth=vth, bias_mant=np.zeros(2), bias_exp=np.zeros(2), vth_format=LOIHI2.vth,
                      bias_format=LOIHI2.bias, decay_format=LOIHI2.decay)
    b = GraphBuilder()
    b.add("input", Input(shape=(2,)))
    b.add("n", bad, ["input"])
    b.add("output", Output(), ["n"])
    found = [msg for node, msg in Verifier().problems(b.build(verify=False)) if node == "n"]
    assert any(m.startswith("vth outside") for m in found)
    assert "a LoihiNeuron cannot take input from Input" in found
    with pytest.raises(GraphError, match="node 'n'"):
        b.build()


def test_reading_one_input_twice_is_refused_clearly():
    b = GraphBuilder()
    b.add("input", Input(shape=(3,)))
    with pytest.raises(GraphError, match="node 'sum': reads the same input twice"):
        b.add("sum", Add(), ["input", "input"])


def test_ancestors_descendants_and_users_agree_with_networkx():
    """Graph.ancestors / descendants (one walk for many nodes) equal the union of networkx's
    per-node answers; users come in topological order, on a graph with a residual add."""
    b = GraphBuilder()
    b.add("input", Input(shape=(3,)))
    b.add("fc0", Dense(weight=np.ones((3, 3))), ["input"])
    b.add("r0", ReLU(), ["fc0"])
    b.add("fc1", Dense(weight=np.ones((3, 3))), ["r0"])
    b.add("fc2", Dense(weight=np.ones((3, 3))), ["r0"])
    b.add("add", Add(), ["fc2", "fc1"])
    b.add("r1", ReLU(), ["add"])
    b.add("out", Output(), ["r1"])
    g = b.build()
    for names in (["add"], ["fc1", "fc2"], ["r0", "out"], ["input"], []):
        assert g.ancestors(names) == set().union(*(nx.ancestors(g.nx, n) for n in names)), names
        assert g.descendants(names) == set().union(*(nx.descendants(g.nx, n) for n in names)), names
    order = g.order()
    assert g.users("r0") == sorted(["fc1", "fc2"], key=order.index)
