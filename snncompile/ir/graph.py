"""The IR graph: named nodes, each an op and its output shape, over a networkx.DiGraph.

A Graph is never edited in place: ``graph.edit()`` gives a GraphBuilder seeded with the graph,
and ``builder.build()`` returns a new, verified Graph. Edge attribute ``port`` orders the
inputs of ops that care (Add).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import networkx as nx

from snncompile.errors import GraphError
from snncompile.ir.ops import Input, Op, Output, Shape, ShapeError


class Graph:
    """An immutable, verified dataflow graph of ops."""

    def __init__(self, nx_graph: nx.DiGraph, metadata: dict | None = None):
        self._g = nx_graph
        self.metadata = dict(metadata or {})
        nx.freeze(self._g)

    # -- queries -------------------------------------------------------------------------------
    @property
    def nx(self) -> nx.DiGraph:
        """The underlying (frozen) networkx graph."""
        return self._g

    def __contains__(self, name: str) -> bool:
        return name in self._g

    def __len__(self) -> int:
        return self._g.number_of_nodes()

    def op(self, name: str) -> Op:
        return self._g.nodes[name]["op"]

    def shape(self, name: str) -> Shape:
        return self._g.nodes[name]["shape"]

    def inputs(self, name: str) -> list[str]:
        """Predecessors of ``name`` in port order."""
        preds = list(self._g.predecessors(name))
        return sorted(preds, key=lambda p: self._g.edges[p, name]["port"])

    def users(self, name: str) -> list[str]:
        """Successors of ``name`` in topological order."""
        position = self._g.graph.get("_position")
        if position is None:
            position = {n: i for i, n in enumerate(self.order())}
            self._g.graph["_position"] = position
        return sorted(self._g.successors(name), key=position.__getitem__)

    def ancestors(self, names: Iterable[str]) -> set[str]:
        """Every node with a path into one of ``names`` (not ``names`` themselves unless so
        reached): one walk for all of them, linear in the graph."""
        return self._reach(names, self._g.predecessors)

    def descendants(self, names: Iterable[str]) -> set[str]:
        """Every node reached from one of ``names`` (as ``ancestors``, the other way)."""
        return self._reach(names, self._g.successors)

    @staticmethod
    def _reach(names: Iterable[str], step) -> set[str]:
        seen: set[str] = set()
        stack = list(names)
        while stack:
            for n in step(stack.pop()):
                if n not in seen:
                    seen.add(n)
                    stack.append(n)
        return seen

    def order(self) -> list[str]:
        """Nodes in a deterministic topological order (ties broken by insertion order)."""
        cached = self._g.graph.get("_order")
        if cached is None:
            index = {n: i for i, n in enumerate(self._g.nodes)}
            cached = list(nx.lexicographical_topological_sort(self._g, key=index.__getitem__))
            # the frozen graph still allows its graph-attribute dict to be used as a cache
            self._g.graph["_order"] = cached
        return cached

    def nodes(self) -> Iterator[tuple[str, Op]]:
        for name in self.order():
            yield name, self.op(name)

    def input_names(self) -> list[str]:
        return [n for n, op in self.nodes() if isinstance(op, Input)]

    def output_names(self) -> list[str]:
        return [n for n, op in self.nodes() if isinstance(op, Output)]

    def find(self, op_type: type | tuple[type, ...]) -> list[str]:
        return [n for n, op in self.nodes() if isinstance(op, op_type)]

    def edit(self) -> GraphBuilder:
        return GraphBuilder.from_graph(self)

    def __repr__(self) -> str:
        lines = [f"Graph({len(self)} nodes)"]
        for name, op in self.nodes():
            ins = ", ".join(self.inputs(name))
            lines.append(f"  {name}: {type(op).__name__}({ins}) -> {self.shape(name)}")
        return "\n".join(lines)

    def structure(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(name, op kind, inputs) per node: what structural-equality tests compare."""
        return [(n, op.kind.value, tuple(self.inputs(n))) for n, op in self.nodes()]


class GraphBuilder:
    """Mutable staging area for building or editing a Graph."""

    def __init__(self, metadata: dict | None = None):
        self._g = nx.DiGraph()
        self.metadata = dict(metadata or {})

    @classmethod
    def from_graph(cls, graph: Graph) -> GraphBuilder:
        builder = cls(graph.metadata)
        for name in graph.order():
            builder.add(name, graph.op(name), graph.inputs(name))
        return builder

    def __contains__(self, name: str) -> bool:
        return name in self._g

    def op(self, name: str) -> Op:
        return self._g.nodes[name]["op"]

    def inputs(self, name: str) -> list[str]:
        preds = list(self._g.predecessors(name))
        return sorted(preds, key=lambda p: self._g.edges[p, name]["port"])

    def users(self, name: str) -> list[str]:
        return list(self._g.successors(name))

    def unique_name(self, base: str) -> str:
        if base not in self._g:
            return base
        i = 1
        while f"{base}_{i}" in self._g:
            i += 1
        return f"{base}_{i}"

    def add(self, name: str, op: Op, inputs: Iterable[str] = ()) -> str:
        if name in self._g:
            raise GraphError(name, "a node of this name already exists")
        inputs = list(inputs)
        for src in inputs:
            if src not in self._g:
                raise GraphError(name, f"input '{src}' does not exist")
        if len(set(inputs)) != len(inputs):
            # one edge per pair of nodes (DiGraph): x + x must be written as a Scale by 2
            raise GraphError(name, f"reads the same input twice ({inputs})")
        self._g.add_node(name, op=op)
        for port, src in enumerate(inputs):
            self._g.add_edge(src, name, port=port)
        return name

    def replace(self, name: str, op: Op, inputs: Iterable[str] | None = None) -> None:
        """Give node ``name`` a new op (and optionally new inputs), keeping its users."""
        self._g.nodes[name]["op"] = op
        if inputs is not None:
            self._g.remove_edges_from(list(self._g.in_edges(name)))
            for port, src in enumerate(inputs):
                self._g.add_edge(src, name, port=port)

    def set_inputs(self, name: str, inputs: Iterable[str]) -> None:
        self.replace(name, self.op(name), inputs)

    def redirect_users(self, old: str, new: str) -> None:
        """Every user of ``old`` reads ``new`` instead, on the same port."""
        for user in list(self._g.successors(old)):
            port = self._g.edges[old, user]["port"]
            self._g.remove_edge(old, user)
            self._g.add_edge(new, user, port=port)

    def remove(self, name: str) -> None:
        self._g.remove_node(name)

    def bypass(self, name: str) -> None:
        """Remove a one-input node, connecting its users to its input."""
        (src,) = self.inputs(name)
        self.redirect_users(name, src)
        self._g.remove_node(name)

    def build(self, verify: bool = True) -> Graph:
        """Infer every shape, then verify; raises GraphError naming the first bad node."""
        g = self._g.copy()
        if not nx.is_directed_acyclic_graph(g):
            cycle = nx.find_cycle(g)
            raise GraphError(cycle[0][0], f"graph has a cycle through {[e[0] for e in cycle]}")
        index = {n: i for i, n in enumerate(g.nodes)}
        for name in nx.lexicographical_topological_sort(g, key=index.__getitem__):
            op = g.nodes[name]["op"]
            preds = sorted(g.predecessors(name), key=lambda p: g.edges[p, name]["port"])
            if op.arity >= 0 and len(preds) != op.arity:
                raise GraphError(name, f"{op.kind.value} takes {op.arity} input(s), has {len(preds)}")
            try:
                g.nodes[name]["shape"] = tuple(op.infer_shape([g.nodes[p]["shape"] for p in preds]))
            except ShapeError as exc:
                raise GraphError(name, str(exc)) from None
        graph = Graph(g, self.metadata)
        if verify:
            from snncompile.ir.verify import Verifier

            Verifier().check(graph)
        return graph


def chain(input_shape: Shape, ops: Iterable[tuple[str, Op]], metadata: dict | None = None) -> Graph:
    """A linear graph: Input -> ops... -> Output (like nir's ``from_list``)."""
    builder = GraphBuilder(metadata)
    prev = builder.add("input", Input(shape=tuple(input_shape)))
    for name, op in ops:
        prev = builder.add(name, op, [prev])
    builder.add("output", Output(), [prev])
    return builder.build()
