"""The IR verifier: structural and parameter rules, each failure naming the offending node."""

from __future__ import annotations

from snncompile.errors import GraphError
from snncompile.ir.ops import BiasEncoder, FixedConv2d, FixedDense, LoihiNeuron, Output


class Verifier:
    """Checks a Graph; ``check`` raises GraphError for the first problem, ``problems`` lists all."""

    def problems(self, graph) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        if not graph.input_names():
            found.append(("<graph>", "has no Input node"))
        if not graph.output_names():
            found.append(("<graph>", "has no Output node"))
        for name, op in graph.nodes():
            found += [(name, p) for p in op.checked()]
            if 0 in tuple(graph.shape(name) or ()):
                found.append((name, f"{op.kind.value} has a zero-size output {tuple(graph.shape(name))}; "
                                    "every layer needs at least one feature"))
            if isinstance(op, Output) and graph.users(name):
                found.append((name, "an Output must not feed other nodes"))
            if not isinstance(op, Output) and not graph.users(name):
                found.append((name, f"{op.kind.value} output is unused (dead node)"))
            found += [(name, p) for p in self._fixed_rules(graph, name, op)]
        return found

    def check(self, graph) -> None:
        found = self.problems(graph)
        if found:
            node, message = found[0]
            more = f" (and {len(found) - 1} more problem(s))" if len(found) > 1 else ""
            raise GraphError(node, message + more)

    @staticmethod
    def _fixed_rules(graph, name, op) -> list[str]:
        """Fixed-point level: spikes flow neuron -> synapse -> neuron; host input via BiasEncoder."""
        inputs = [graph.op(i) for i in graph.inputs(name)]
        if isinstance(op, LoihiNeuron):
            encoders = [i for i in inputs if isinstance(i, BiasEncoder)]
            others = [i for i in inputs if not isinstance(i, (BiasEncoder, FixedDense, FixedConv2d))]
            if len(encoders) > 1:
                return ["a neuron takes at most one BiasEncoder"]
            if encoders and (op.bias_mant.any()):
                return ["a neuron fed by a BiasEncoder must have zero static bias"]
            if others:
                return [f"a LoihiNeuron cannot take input from {others[0].kind.value}"]
        if isinstance(op, (FixedDense, FixedConv2d)):
            if not all(isinstance(i, LoihiNeuron) for i in inputs):
                return [f"{op.kind.value} must be fed by LoihiNeuron spikes"]
        if isinstance(op, BiasEncoder):
            if any(not isinstance(graph.op(u), LoihiNeuron) for u in graph.users(name)):
                return ["a BiasEncoder may feed LoihiNeurons only"]
            if any(i.fixed for i in inputs):
                return ["a BiasEncoder takes a float (host) value"]
        return []


def verify(graph) -> None:
    Verifier().check(graph)


__all__ = ["Verifier", "verify", "GraphError"]
