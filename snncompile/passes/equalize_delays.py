"""Equal synaptic delays on every path into a neuron: relay layers on the shorter paths.

On Loihi each synaptic layer delays by one step (``ir.timing``). Where a neuron's inputs come
over paths of different synaptic depth, a residual block's shortcut (one synaptic layer) beside
its main branch (two), the neuron sums spikes that the delay-free model (the ANN's rate code,
snnTorch, SpikingJelly) would have summed at different times: the shortcut's train is one step
ahead. Measured on the CIFAR ResNet-20 (digits upsampled, 120 test samples) at T=8 steps of
evidence: float SNN 85.8 % without delays, 59.2 % with Loihi's delays and mismatched paths.

With this pass (``--equalize-delays``) the same ResNet-20 scores, float / fixed point: T=8
85.8 / 91.7 % (without: 59.2 / 58.3 %), T=16 90.8 / 94.2 % (without: 98.3 / 95.0 %), with 98,304
relay neurons (+52 %) and 39 cores instead of 26. The mismatched paths are a handicap at low T
but a head start at higher T (the early paths have run longer when the readout starts counting),
so the compiler's default (``--equalize-delays auto``, ``compiler.choose_delays``) runs both float
SNNs on calibration samples and keeps the one closer to the ANN.

``EqualizeDelays`` inserts, on each early input, relay layers until every input of the neuron
arrives at the same step. A relay is an IF layer (reset to zero, v_init 0, threshold 0.5) fed by
an identity synapse of weight 1 (a depthwise 1×1 convolution for (C, H, W) layers, an identity
Dense for vectors): it fires at step t + 1 exactly when its source fired at step t, so with
equal paths every neuron runs the delay-free model's trajectory shifted by its depth, exactly
(biases wait for their input, passes.latency). Chains are shared: a source relayed by k steps
reuses its chain's first k layers.

Relays cost neurons (each is a copy of its source population). ``max_extra`` bounds the relay
neurons as a fraction of the network's; beyond it (DenseNet's concatenations would relay every
layer of a block many times) nothing is inserted and ``graph.metadata["delays"]`` says so.
The latency L does not change: relays lie on the shorter paths only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from snncompile.ir.graph import Graph
from snncompile.ir.ops import IF, LIF, Add, Concat, Conv2d, Dense, Flatten, Integrator, Reset
from snncompile.ir.timing import arrivals

NEURONS = (IF, LIF, Integrator)


@dataclass(frozen=True)
class EqualizeDelays:
    max_extra: float = 1.0  # relay neurons at most this fraction of the network's neurons
    name: str = "equalize_delays"

    def __call__(self, graph: Graph) -> Graph:
        neurons = sum(int(np.prod(graph.shape(n))) for n, op in graph.nodes() if isinstance(op, NEURONS))
        plan = self._plan(graph)
        if plan is None:
            return self._note(graph, {"equalized": False, "why": "a path mixes spikes with host values"})
        extra = sum(int(np.prod(graph.shape(src))) * k for src, k in _chains(plan).items())
        info = {"relay_neurons": extra, "neurons_before": neurons, "inserted_on": len(plan)}
        if not plan:
            return self._note(graph, {"equalized": True, **info})
        if extra > self.max_extra * neurons:
            return self._note(graph, {"equalized": False, **info, "why": (
                f"relays would add {extra:,} neurons to {neurons:,} (more than {self.max_extra:.0%}); "
                "paths of different depth keep their delays")})
        builder = graph.edit()
        chains: dict[str, list[str]] = {}
        for (src, user), k in plan.items():
            chain = chains.setdefault(src, [])
            while len(chain) < k:
                chain.append(self._relay(builder, graph, src, chain[-1] if chain else src, len(chain)))
            inputs = [chain[k - 1] if i == src else i for i in builder.inputs(user)]
            builder.set_inputs(user, inputs)
        builder.metadata = {**builder.metadata, "delays": {"equalized": True, **info}}
        return builder.build()

    @staticmethod
    def _note(graph: Graph, info: dict) -> Graph:
        builder = graph.edit()
        builder.metadata = {**builder.metadata, "delays": info}
        return builder.build()

    def _plan(self, graph: Graph) -> dict[tuple[str, str], int] | None:
        """{(spike source, the op reading it): relay steps}. Relays lengthen the shorter paths up
        to the longest, so once they are in, every node's value arrives at its longest-path step
        (``ir.timing.arrivals``' second figure): an input arriving ``top − hi`` steps early gets
        that many relays."""
        times = arrivals(graph)
        plan: dict[tuple[str, str], int] = {}
        for name, op in graph.nodes():
            if not isinstance(op, NEURONS + (Add, Concat)):
                continue
            late = {i: times[i][1] for i in graph.inputs(name)}
            top = max(late.values(), default=0)
            for i, hi in late.items():
                if hi == top:
                    continue
                where = self._spike_edge(graph, i, name)
                if where is None:
                    return None
                plan[where] = plan.get(where, 0) + top - hi
        return plan

    @staticmethod
    def _spike_edge(graph: Graph, node: str, user: str) -> tuple[str, str] | None:
        """The (neuron, reader) edge on which to relay ``node``'s input to ``user``: ``node``
        itself when it is a neuron; a synapse's (through Flattens) source neuron otherwise."""
        op = graph.op(node)
        if op.neuron:
            return node, user
        if isinstance(op, (Conv2d, Dense)):
            (src,) = graph.inputs(node)
            reader = node
            while isinstance(graph.op(src), Flatten):
                reader = src
                (src,) = graph.inputs(src)
            if graph.op(src).neuron and len(graph.users(node)) == 1:
                return src, reader
        return None

    @staticmethod
    def _relay(builder, graph: Graph, src: str, prev: str, level: int) -> str:
        shape = graph.shape(src)
        base = f"{src}_relay_{level + 1}"
        if len(shape) == 3:
            syn = Conv2d(weight=np.ones((shape[0], 1, 1, 1)), groups=shape[0])
        else:
            n = int(np.prod(shape))
            syn = Dense(weight=np.eye(n))
        s = builder.add(builder.unique_name(base + "_in"), syn, [prev])
        if getattr(graph.op(src), "reset", None) is Reset.SIGNED:
            # a copy of −1 / 0 / +1 spikes: weight = threshold and v starting in (0, threshold]
            # fire +1 on a +1 and −1 on a −1 (the source's spikes never sum below 0, so neither
            # do the relay's), and v is back at v_init after every step
            neuron = IF(threshold=np.full(shape, 1.0), reset=Reset.SIGNED, v_init=np.full(shape, 0.5))
        else:
            neuron = IF(threshold=np.full(shape, 0.5), reset=Reset.ZERO, v_init=np.zeros(shape))
        return builder.add(builder.unique_name(base), neuron, [s])


def _chains(plan: dict[tuple[str, str], int]) -> dict[str, int]:
    """Relay layers per source: the longest delay asked of it (chains are shared)."""
    out: dict[str, int] = {}
    for (src, _), k in plan.items():
        out[src] = max(out.get(src, 0), k)
    return out
