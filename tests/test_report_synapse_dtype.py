"""report.json's per-layer ``synapse_dtype``: the float type of each synapse's exact sum."""

import json

from snncompile.ir import Reset
from snncompile.report.build import _fixed_layers
from snncompile.sim import fixed
from tests.sim.test_fixed_float32 import boundary_graph
from tests.sim.test_fixed_oracle import graph_for


def test_each_layer_names_the_sum_type_of_the_synapses_feeding_it():
    p = dict(seed=1, du=4095, dv=0, reset=Reset.SUBTRACT, w=64, positive=False, conv_bits=24, exp=0,
             vth=2000, bias=0, v_init=0, input_scale=4000.0)
    graph = graph_for(p)
    stats = {name: fixed.LayerStats() for name in ("n1", "n2", "n3")}
    layers = {layer["name"]: layer for layer in _fixed_layers(graph, graph, stats, 1, 8)}
    assert layers["n1"]["synapse_dtype"] == {}  # fed by the host encoder only
    assert layers["n2"]["synapse_dtype"] == {"conv_a": "float32", "conv_b": "float32"}
    assert layers["n3"]["synapse_dtype"] == {"dense": "float32"}
    json.dumps(layers)

    wide = boundary_graph("dense", 2**24 + 1)
    stats = {name: fixed.LayerStats() for name in ("src", "n")}
    layers = {layer["name"]: layer for layer in _fixed_layers(wide, wide, stats, 1, 8)}
    assert layers["n"]["synapse_dtype"] == {"a": "float64", "b": "float64"}  # bounds 2**24 + 1, 2**24
