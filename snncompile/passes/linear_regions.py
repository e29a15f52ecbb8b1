"""Lower every linear region between spiking populations onto synapses, structurally.

A *region* is what lies between the neurons (ReLUs before conversion) and the next neurons:
Conv2d, Dense, AvgPool2d/SumPool2d, BatchNorm, Flatten, Add and channel Concat. On Loihi only
weighted connections join populations, so each region becomes, per (source population, target
population), one synaptic op; the target sums them (dendritic accumulation, membrane-add):

    target = Σ_paths L_path(source_path) + c,    c = region(all sources = 0)

Each path's linear map is composed op by op *as a convolution*, never as a matrix:

- a pool of window k, stride s, padding p is a depthwise conv of weight 1/k² (or 1: SumPool2d);
  BatchNorm a depthwise 1×1 conv; Concat's input j a 1×1 conv embedding its channels at their
  offset; Add and Flatten the identity;
- conv A (kernel kA, stride sA, padding pA, dilation dA) then conv B (kB, sB, pB, dB) is one conv
  of kernel sA·dB·(kB − 1) + dA·(kA − 1) + 1, stride sA·sB, padding sA·pB + pA, with
  K[o, i, sA·dB·u + dA·v] = Σ_m B[o, m, u]·A[m, i, v]  (so a pool of k before a conv of kernel K
  is a conv of kernel k·K, stride × k). Exact when B's zero padding stays zero: every window of
  A that B reads in its padding must lie wholly in the padding of the composed conv
  (dA·(kA − 1) < sA + pA on the low side; sA·H_A − pA ≥ H_x on the high side where B reads past
  A's output). Groups survive when one side is depthwise; otherwise channels are expanded.
- a conv (or the identity) then Flatten then Dense is one Dense, W' = Wᵀ pulled back through the
  conv (``torch.nn.grad.conv2d_input``, the exact adjoint); Dense then Dense is W₂·W₁.

Memory and time are linear in parameters + neurons: kernels are composed, never a matrix over
inputs × outputs of a convolution. Where a composition is inexact (an overlapping pool before a
padded conv) or would grow a Dense beyond ``fold_limit`` weights (global pooling folded into a
large classifier: ResNet-18 at 224×224 would need 1000 × 25,088), the pool gets *relay neurons*
instead: before conversion a ReLU after the pool (exact in the ANN: the pool of a ReLU's output is
non-negative), which conversion turns into IF neurons fed by the pool as a strided depthwise
synapse. That costs the pool's output neurons and one step of latency and is recorded in
``graph.metadata["linear_regions"]``.

The constant part c (biases, BatchNorm shifts) is evaluated once with every source at zero and
goes to the first synapse's bias; it must be one value per channel (Loihi keeps a bias per neuron,
but the IR's Conv2d per channel), else the region is refused. Regions fed by the graph input run
on the host and are left alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from snncompile.errors import PassError, Problem, UnsupportedModelError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import (
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Input,
    Output,
    ReLU,
    SumPool2d,
    conv_output_hw,
    owned,
    ungrouped,
)
from snncompile.sim.ann import UNARY, one_thread

REGION = (Conv2d, Dense, AvgPool2d, AdaptiveAvgPool2d, BatchNorm, Flatten, Add, Concat)  # SumPool2d: an AvgPool2d
FOLD_LIMIT = 4_000_000  # weights of a composed Dense beyond which a pool gets relay neurons instead
CONV_LIMIT = 64_000_000  # elements of a composed conv kernel (a guard; real kernels are far smaller)


class _Relays(Exception):
    """Every composition of one lowering attempt that needs relay neurons."""

    def __init__(self, found: list):
        super().__init__(f"{len(found)} inexact compositions")
        self.found = found


class _Inexact(Exception):
    """A composition that would not be exact (or would not fit): the reason, and the pool that a
    relay population after it would avoid composing."""

    def __init__(self, reason: str, nodes: list[str] | str):
        super().__init__(reason)
        nodes = [nodes] if isinstance(nodes, str) else list(nodes)
        self.reason, self.nodes = reason, nodes
        self.node = nodes[-1] if nodes else ""


@dataclass
class _Map:
    """A composed linear map from a source population (shape ``in_shape``) to ``out_shape``,
    bias excluded. kind: id | conv | dense. ``flat``: the conv's output is read flattened."""

    kind: str
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    weight: torch.Tensor | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    original: object = None  # the op itself when the path is that one op (keeps it bit for bit)
    nodes: list[str] = field(default_factory=list)
    post: tuple[torch.Tensor, torch.Tensor] | None = None  # adaptive pooling (A_h, A_w) after the conv

    @property
    def conv_shape(self) -> tuple[int, ...]:
        """The (C, H, W) the conv computes (``out_shape`` may be its flattening)."""
        return self._conv_shape

    def __post_init__(self):
        self._conv_shape = self.out_shape


def _t(arr) -> torch.Tensor:
    return torch.tensor(np.asarray(arr), dtype=torch.float64)


def _w(m: _Map) -> torch.Tensor:
    """A conv map's kernel: a path's one Conv2d is converted only when a composition needs it
    (most paths keep their op's weights: converting every one was 93 MB per round on ResNet-18)."""
    if m.weight is None and m.original is not None:
        m.weight = _t(m.original.weight)
    return m.weight


def _dense_weight(m: _Map) -> torch.Tensor:
    """A dense map's matrix (the op's own, converted only when a composition needs it)."""
    return m.weight if m.weight is not None else _t(m.original.weight)


def _as_conv(m: _Map) -> _Map:
    """The identity on (C, H, W) as a depthwise 1×1 conv."""
    if m.kind != "id":
        return m
    c = m.out_shape[0]
    return _Map("conv", m.in_shape, m.out_shape, torch.ones(c, 1, 1, 1, dtype=torch.float64), groups=c,
                nodes=list(m.nodes))


def _dense_channels(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """A grouped kernel (O, I/g, kh, kw) as its dense (O, I, kh, kw) equivalent."""
    return weight if groups == 1 else torch.from_numpy(ungrouped(weight.numpy(), groups))


def _depthwise(weight: torch.Tensor, groups: int) -> bool:
    return groups == weight.shape[0] and weight.shape[1] == 1


def _check_padding(a: _Map, b: Conv2d, node: str, out_hw: tuple[int, int]) -> None:
    """Raise _Inexact where B's zero padding would read non-zero values of the composed conv."""
    x_hw, a_hw = a.in_shape[1:], a.conv_shape[1:]
    for axis in range(2):
        ka = _w(a).shape[2 + axis]
        sa, pa, da = a.stride[axis], a.padding[axis], a.dilation[axis]
        kb, sb, pb, db = b.weight.shape[2 + axis], b.stride[axis], b.padding[axis], b.dilation[axis]
        if pb > 0 and da * (ka - 1) >= sa + pa:
            raise _Inexact(f"the windows of '{a.nodes[-1]}' overlap the zero padding of '{node}'", a.nodes)
        last_read = sb * (out_hw[axis] - 1) - pb + db * (kb - 1)
        if last_read >= a_hw[axis] and sa * a_hw[axis] - pa < x_hw[axis]:
            raise _Inexact(f"'{a.nodes[-1]}' reads edge rows that '{node}' sees as zero padding", a.nodes)


def _compose_conv(a: _Map, b: Conv2d, node: str, out_shape: tuple[int, ...]) -> _Map:
    """conv b after the conv map a (see the module docstring)."""
    _check_padding(a, b, node, out_shape[1:])
    wa, wb = _w(a), _t(b.weight)
    if _depthwise(wa, a.groups) and wa.shape[0] == a.in_shape[0]:
        # A is diagonal in channels: K keeps B's channel structure.
        o, bi = wb.shape[:2]
        og = o // b.groups
        chan = (torch.arange(o)[:, None] // og) * bi + torch.arange(bi)[None, :]  # A's channel per (o, j)
        a_of = wa[chan.reshape(-1), 0].reshape(o, bi, *wa.shape[2:])

        def term(uy, ux):
            return wb[:, :, uy, ux, None, None] * a_of
        groups = b.groups
        out_c, in_c = o, bi
    elif _depthwise(wb, b.groups):
        o = wb.shape[0]

        def term(uy, ux):
            return wb[:, 0, uy, ux, None, None, None] * wa
        groups = a.groups
        out_c, in_c = o, wa.shape[1]
    else:
        da_, db_ = _dense_channels(wa, a.groups), _dense_channels(wb, b.groups)

        def term(uy, ux):
            return torch.einsum("om,mikl->oikl", db_[:, :, uy, ux], da_)
        groups = 1
        out_c, in_c = wb.shape[0], da_.shape[1]
    kb = wb.shape[2:]
    ka = wa.shape[2:]
    size = [a.stride[i] * b.dilation[i] * (kb[i] - 1) + a.dilation[i] * (ka[i] - 1) + 1 for i in range(2)]
    if out_c * in_c * size[0] * size[1] > CONV_LIMIT:
        raise _Inexact(f"composing into '{node}' needs a {size[0]}x{size[1]} kernel of {out_c}x{in_c} channels",
                       a.nodes)
    kernel = torch.zeros(out_c, in_c, *size, dtype=torch.float64)
    for uy in range(kb[0]):
        for ux in range(kb[1]):
            oy, ox = a.stride[0] * b.dilation[0] * uy, a.stride[1] * b.dilation[1] * ux
            ey, ex = oy + a.dilation[0] * (ka[0] - 1) + 1, ox + a.dilation[1] * (ka[1] - 1) + 1
            kernel[:, :, oy:ey:a.dilation[0], ox:ex:a.dilation[1]] += term(uy, ux)
    stride = (a.stride[0] * b.stride[0], a.stride[1] * b.stride[1])
    padding = (a.stride[0] * b.padding[0] + a.padding[0], a.stride[1] * b.padding[1] + a.padding[1])
    if conv_output_hw(a.in_shape[1:], size, stride, padding, (1, 1)) != tuple(out_shape[1:]):
        raise _Inexact(f"composing '{a.nodes[-1]}' into '{node}' changes the output size", a.nodes)
    return _Map("conv", a.in_shape, out_shape, kernel, stride, padding, (1, 1), groups, nodes=a.nodes + [node])


def _pool_map(op: AvgPool2d, shape: tuple[int, ...]) -> tuple[torch.Tensor, dict]:
    c = shape[0]
    value = 1.0 if isinstance(op, SumPool2d) else 1.0 / (op.kernel[0] * op.kernel[1])
    return torch.full((c, 1, *op.kernel), value, dtype=torch.float64), {
        "stride": op.stride, "padding": op.padding, "groups": c}


def _step(m: _Map, node: str, op, port: int, graph: Graph, fold_limit: int) -> _Map:
    """The map after one more op of the path (``port``: which input of the op the path enters)."""
    out = graph.shape(node)
    if isinstance(op, (Add,)):
        m.nodes.append(node)
        return m
    if isinstance(op, Flatten):
        flat = _Map(m.kind, m.in_shape, out, m.weight, m.stride, m.padding, m.dilation, m.groups, m.original,
                    m.nodes + [node], m.post)
        flat._conv_shape = m.conv_shape
        return flat
    if isinstance(op, AdaptiveAvgPool2d):
        if m.post is not None or m.kind == "dense":
            raise PassError(f"linear_regions: node '{node}': adaptive pooling after {m.kind} has no lowering")
        ah, aw = (_t(a) for a in op.matrices(m.out_shape))
        pooled = _Map(m.kind, m.in_shape, out, _w(m), m.stride, m.padding, m.dilation, m.groups, None,
                      m.nodes + [node], (ah, aw))
        pooled._conv_shape = m.conv_shape
        return pooled
    if m.post is not None and not isinstance(op, Dense):
        raise _Inexact(f"adaptive pooling with unequal windows before '{node}' lowers only into a Linear",
                       m.nodes)
    if isinstance(op, Dense):
        if m.kind == "id" and m.post is None:
            return _Map("dense", m.in_shape, out, None, original=op, nodes=m.nodes + [node])
        w = _t(op.weight)
        if m.post is not None:  # pull the rows back through the adaptive pooling first
            ah, aw = m.post
            rows = torch.einsum("ocpq,pi,qj->ocij", w.reshape(w.shape[0], -1, ah.shape[0], aw.shape[0]), ah, aw)
            size = w.shape[0] * math.prod(m.in_shape)
            if size > max(fold_limit, w.numel()):  # (no larger than the Linear itself: fine)
                raise _Inexact(f"folding into '{node}' needs a {w.shape[0]}x{math.prod(m.in_shape)} Dense", m.nodes)
            if m.kind == "id":
                return _Map("dense", m.in_shape, out, rows.reshape(w.shape[0], -1), nodes=m.nodes + [node])
            w = rows.reshape(w.shape[0], -1)
        if m.kind == "dense":
            return _Map("dense", m.in_shape, out, w @ _dense_weight(m), nodes=m.nodes + [node])
        size = w.shape[0] * math.prod(m.in_shape)
        if m.post is None and size > max(fold_limit, w.numel()):
            raise _Inexact(f"folding into '{node}' needs a {w.shape[0]}x{math.prod(m.in_shape)} Dense", m.nodes)
        rows = w.reshape(w.shape[0], *m.conv_shape)
        pulled = torch.nn.grad.conv2d_input((w.shape[0],) + tuple(m.in_shape), _w(m), rows, m.stride,
                                            m.padding, m.dilation, m.groups)
        return _Map("dense", m.in_shape, out, pulled.reshape(w.shape[0], -1), nodes=m.nodes + [node])
    if m.kind == "dense" or len(out) != 3 and not isinstance(op, BatchNorm):
        raise PassError(f"linear_regions: node '{node}': {op.kind.value} after a Dense has no lowering")
    if isinstance(op, Concat):
        before = sum(graph.shape(s)[0] for s in graph.inputs(node)[:port])
        cin = m.out_shape[0]
        if len(out) != 3:
            raise PassError(f"linear_regions: node '{node}': only channel Concat of (C, H, W) is lowered")
        embed = torch.zeros(out[0], cin, 1, 1, dtype=torch.float64)
        embed[before + torch.arange(cin), torch.arange(cin)] = 1.0
        b = Conv2d(weight=embed.numpy())
        return _compose_conv(_as_conv(m), b, node, out)
    if isinstance(op, BatchNorm):
        scale, _shift = op.scale_shift()
        if len(out) != 3:
            if m.kind != "dense":
                raise PassError(f"linear_regions: node '{node}': BatchNorm of a vector after no Dense")
            return _Map("dense", m.in_shape, out, _t(scale)[:, None] * _dense_weight(m), nodes=m.nodes + [node])
        b = Conv2d(weight=scale.reshape(-1, 1, 1, 1), groups=out[0])
        return _compose_conv(_as_conv(m), b, node, out)
    if isinstance(op, AvgPool2d):
        weight, params = _pool_map(op, out)
        b = Conv2d(weight=weight.numpy(), **params)
        if m.kind == "id":
            return _Map("conv", m.in_shape, out, weight, params["stride"], params["padding"], groups=params["groups"],
                        nodes=m.nodes + [node])
        return _compose_conv(m, b, node, out)
    if isinstance(op, Conv2d):
        if m.kind == "id":
            return _Map("conv", m.in_shape, out, None, op.stride, op.padding, op.dilation, op.groups,
                        original=op, nodes=m.nodes + [node])
        return _compose_conv(m, op, node, out)
    raise PassError(f"linear_regions: node '{node}': {op.kind.value} is not linear")


@dataclass(frozen=True)
class _Path:
    source: str
    hops: tuple[tuple[str, int], ...]  # (node, input port) from the source's user to the region's end


def _paths(graph: Graph, end: str, is_source) -> list[_Path]:
    """Every path from a source (or the Input) back from ``end`` through region ops."""
    found: list[_Path] = []

    def walk(node: str, hops: tuple):
        op = graph.op(node)
        if is_source(node) or isinstance(op, Input):
            found.append(_Path(node, hops))
            return
        if not isinstance(op, REGION):
            raise PassError(f"linear_regions: node '{node}': {op.kind.value} inside a linear region")
        for port, src in enumerate(graph.inputs(node)):
            walk(src, ((node, port),) + hops)

    walk(end, ())
    return found


def _merge(maps: list[_Map]) -> _Map:
    """One map for several paths from one source to one target (same stride: kernels summed)."""
    first = maps[0]
    if len(maps) == 1:
        return first
    if all(m.kind == "dense" for m in maps):
        return _Map("dense", first.in_shape, first.out_shape, sum(_dense_weight(m) for m in maps))
    convs = [_as_conv(m) for m in maps]
    if any(m.kind != "conv" or m.stride != convs[0].stride or m.dilation != (1, 1) for m in convs):
        raise PassError("linear_regions: two paths from one population to one target with different strides")
    lo = [min(-m.padding[i] for m in convs) for i in range(2)]
    hi = [max(-m.padding[i] + _w(m).shape[2 + i] for m in convs) for i in range(2)]
    out_c, in_c = first.out_shape[0] if len(first.conv_shape) == 3 else first.conv_shape[0], first.in_shape[0]
    kernel = torch.zeros(out_c, in_c, hi[0] - lo[0], hi[1] - lo[1], dtype=torch.float64)
    for m in convs:
        w = _dense_channels(_w(m), m.groups)
        y, x = -m.padding[0] - lo[0], -m.padding[1] - lo[1]
        kernel[:, :, y:y + w.shape[2], x:x + w.shape[3]] += w
    merged = _Map("conv", first.in_shape, first.out_shape, kernel, convs[0].stride, (-lo[0], -lo[1]))
    merged._conv_shape = first.conv_shape
    return merged


def _synapse(m: _Map, bias: np.ndarray | None):
    """The IR op of a composed map, with ``bias`` (per output channel or element)."""
    if m.post is not None:
        raise PassError("linear_regions: adaptive pooling with unequal windows must feed a Linear")
    if m.kind == "dense" and m.weight is None:  # the path's one Dense, unchanged (no copy)
        return Dense(weight=m.original.weight, bias=bias)
    if m.original is not None and m.kind == "conv" and len(m.out_shape) == 3:
        # the path's one Conv2d, unchanged (only Adds after it, which keep ``original``): no copy
        op = m.original
        return Conv2d(weight=op.weight, bias=bias, stride=op.stride, padding=op.padding, dilation=op.dilation,
                      groups=op.groups)
    if m.kind == "id":  # an identity shortcut: the full C×C identity, as conversion always wrote it
        # (off-diagonal zeros cost no synapse, and weight calibration may use them)
        if len(m.out_shape) == 3:
            c = m.out_shape[0]
            return Conv2d(weight=np.eye(c).reshape(c, c, 1, 1), bias=bias)
        return Dense(weight=np.eye(math.prod(m.out_shape)), bias=bias)
    if m.kind == "dense":
        return Dense(weight=owned(m.weight.numpy()), bias=bias)
    if len(m.out_shape) != 3 and m.conv_shape[1:] != (1, 1):
        raise PassError("linear_regions: a flattened conv must end in a Dense or a global pooling")
    return Conv2d(weight=owned(_w(m).numpy()), bias=bias, stride=m.stride, padding=m.padding, dilation=m.dilation,
                  groups=m.groups)


def _region_bias(graph: Graph, end: str, sources: list[str]) -> torch.Tensor:
    """The region's value at ``end`` with every source at zero (one sample)."""
    values: dict[str, torch.Tensor] = {s: torch.zeros((1,) + graph.shape(s), dtype=torch.float64) for s in sources}
    zeros = set(sources)  # nodes whose value is all zeros

    def value(node: str) -> torch.Tensor:
        if node not in values:
            op = graph.op(node)
            args = [value(i) for i in graph.inputs(node)]
            if isinstance(op, Conv2d) and graph.inputs(node)[0] in zeros:
                # a conv of zeros is its bias everywhere (finite weights: the verifier checks them);
                # not convolving zeros saves the region's full-size convolutions
                shape = (1,) + graph.shape(node)
                if op.bias is None:
                    values[node] = torch.zeros(shape, dtype=torch.float64)
                    zeros.add(node)
                else:
                    bias = torch.tensor(op.bias, dtype=torch.float64)
                    values[node] = bias.reshape(1, -1, 1, 1).expand(shape).clone()
            elif isinstance(op, Add):
                values[node] = torch.stack(args).sum(0)
            elif isinstance(op, Concat):
                values[node] = torch.cat(args, dim=1)
            else:
                values[node] = UNARY[type(op)](op, args[0])
        return values[node]

    return value(end)[0]


def _nonnegative(graph: Graph, node: str) -> bool:
    """Whether ``node``'s values are ≥ 0 by construction: a ReLU, or pooling / Concat / Flatten of such."""
    op = graph.op(node)
    if isinstance(op, ReLU):
        return True
    return isinstance(op, (AvgPool2d, Concat, Flatten)) and all(_nonnegative(graph, i) for i in graph.inputs(node))


@dataclass(frozen=True, eq=False)
class LowerLinearRegions:
    """Apply the module docstring to every target (ReLU, neuron or Output) of ``graph``."""

    fold_limit: int = FOLD_LIMIT
    relays: bool = True  # insert relay ReLUs where folding is inexact (ANN graphs only)
    name: str = "lower_linear_regions"

    def __call__(self, graph: Graph) -> Graph:
        # many small tensor ops: two intra-op threads made this pass 3-30x slower on a busy 2-core machine
        with one_thread():
            return self._run(graph)

    def _run(self, graph: Graph) -> Graph:
        relays: list[dict] = []
        for _ in range(len(graph) + 1):
            try:
                lowered, regions = self._lower(graph)
            except _Relays as many:
                done = set()
                for exc in many.found:
                    pools = [n for n in exc.nodes if isinstance(graph.op(n), AvgPool2d)]
                    if (pools[-1] if pools else exc.node) in done:
                        continue
                    graph, pool, relay = self._relay(graph, exc)
                    done.add(pool)
                    relays.append({"pool": pool, "relay": relay, "reason": exc.reason,
                                   "extra_neurons": math.prod(graph.shape(relay)), "extra_latency_steps": 1})
                continue
            builder = lowered.edit()
            builder.metadata = {**builder.metadata, "linear_regions": {"relays": relays, "regions": regions}}
            return builder.build()
        raise PassError("linear_regions: relay insertion did not converge")

    def _relay(self, graph: Graph, exc: _Inexact) -> tuple[Graph, str, str]:
        pools = [n for n in exc.nodes if isinstance(graph.op(n), AvgPool2d)]
        pool = pools[-1] if pools else exc.node
        op = graph.op(pool)
        ann = not any(o.neuron for _, o in graph.nodes())
        (src,) = graph.inputs(pool) if isinstance(op, AvgPool2d) else (None,)
        if not (self.relays and ann and isinstance(op, AvgPool2d) and src is not None and _nonnegative(graph, src)):
            raise UnsupportedModelError("lower_linear_regions", [Problem(
                pool, op.kind.value, f"{exc.reason}; no exact synaptic lowering (relay neurons need a "
                "pool of ReLU outputs)")])
        builder = graph.edit()
        relay = builder.unique_name(f"{pool}_relay")
        builder.add(relay, ReLU(), [pool])
        for user in graph.users(pool):
            builder.set_inputs(user, [relay if s == pool else s for s in graph.inputs(user)])
        return builder.build(), pool, relay

    def _lower(self, graph: Graph) -> tuple[Graph, list[dict]]:
        ann = not any(op.neuron for _, op in graph.nodes())

        def is_source(node: str) -> bool:
            op = graph.op(node)
            return op.neuron or (ann and isinstance(op, ReLU))

        # plan every target's inputs first: a synaptic op used by one path only keeps its name
        plan: list[tuple[str, list[tuple[str, str, list[_Path]]]]] = []
        uses: dict[str, int] = {}
        for target in graph.order():
            top = graph.op(target)
            if not (is_source(target) or isinstance(top, Output)):
                continue
            entries = []
            for end in graph.inputs(target):
                if ann and is_source(end) and not isinstance(top, Output):
                    entries.append(("identity", end, []))
                    continue
                if is_source(end) or isinstance(graph.op(end), Input):
                    entries.append(("keep", end, []))
                    continue
                paths = _paths(graph, end, is_source)
                host = [p for p in paths if isinstance(graph.op(p.source), Input)]
                if host:
                    if len(host) != len(paths):
                        raise UnsupportedModelError("lower_linear_regions", [Problem(
                            end, graph.op(end).kind.value, "mixes the model's input with spikes; the "
                            "host-side input layer must reach the neurons on its own")])
                    entries.append(("keep", end, []))
                    continue
                entries.append(("region", end, paths))
                for path in paths:
                    for node, _port in path.hops:
                        uses[node] = uses.get(node, 0) + 1
            plan.append((target, entries))
        builder = graph.edit()
        regions: list[dict] = []
        inexact: list[_Inexact] = []
        for target, entries in plan:
            top = graph.op(target)
            new_inputs: list[str] = []
            for kind, end, paths in entries:
                if kind == "identity":
                    new_inputs.append(self._identity(builder, graph, end, target))
                elif kind == "keep":
                    new_inputs.append(end)
                else:
                    try:
                        new_inputs += self._lower_region(builder, graph, end, paths, target, regions, uses)
                    except _Inexact as exc:  # collect them all: one relay round for the whole model
                        inexact.append(exc)
            if len(new_inputs) > 1 and top.arity == 1:  # ReLU, Output: one input, the sum
                total = builder.unique_name(f"{target}_sum")
                builder.add(total, Add(), new_inputs)
                new_inputs = [total]
            if new_inputs != graph.inputs(target):
                builder.set_inputs(target, new_inputs)
        if inexact:
            raise _Relays(inexact)
        # drop region ops nobody reads any more (repeat: chains)
        changed = True
        while changed:
            changed = False
            for name in list(graph.order()):
                if name in builder and isinstance(builder.op(name), REGION) and not builder.users(name):
                    builder.remove(name)
                    changed = True
        return builder.build(), regions

    @staticmethod
    def _name(builder, graph: Graph, end: str, source: str, maps: list[_Map], paths: list[_Path],
              uses: dict[str, int]) -> str:
        """The synapse keeps the name of the one Dense/Conv2d it comes from when no other path
        uses that op; an identity shortcut is ``{end}_shortcut_{source}``; else ``{end}_from_{source}``."""
        if len(maps) == 1:
            (path,) = [p for p in paths if p.source == source]
            synaptic = [n for n, _ in path.hops if isinstance(graph.op(n), (Dense, Conv2d))]
            if len(synaptic) == 1 and uses.get(synaptic[0]) == 1:
                return synaptic[0]
            if not synaptic and all(isinstance(graph.op(n), Add) for n, _ in path.hops):
                return builder.unique_name(f"{end}_shortcut_{source}")
        return builder.unique_name(f"{end}_from_{source}")

    @staticmethod
    def _identity(builder, graph: Graph, source: str, target: str) -> str:
        """A source feeding a target directly (ReLU(ReLU(x))) gets an identity synapse."""
        shape = graph.shape(source)
        m = _Map("id", shape, shape, nodes=[])
        name = builder.unique_name(f"{target}_from_{source}")
        builder.add(name, _synapse(m, None), [source])
        return name

    def _lower_region(self, builder, graph: Graph, end: str, paths: list[_Path], target: str,
                      regions: list[dict], uses: dict[str, int]) -> list[str]:
        if len(paths) == 1 and not paths[0].hops[:-1] and isinstance(graph.op(end), (Dense, Conv2d)):
            return [end]  # already one synapse straight from its population
        maps: dict[str, list[_Map]] = {}
        for path in paths:
            m = _Map("id", graph.shape(path.source), graph.shape(path.source), nodes=[])
            for node, port in path.hops:
                m = _step(m, node, graph.op(node), port, graph, self.fold_limit)
            maps.setdefault(path.source, []).append(m)
        sources = list(maps)
        bias = _region_bias(graph, end, sources)
        shape = graph.shape(end)
        if len(shape) == 3:
            per_channel = bias.reshape(shape[0], -1)
            # (positions may differ in the last bits: the conv kernels sum in different orders)
            if not torch.allclose(per_channel, per_channel.mean(1, keepdim=True), rtol=1e-9, atol=1e-12):
                raise UnsupportedModelError("lower_linear_regions", [Problem(
                    end, graph.op(end).kind.value, "its constant part varies within a channel (a bias before "
                    "a padded conv); fold the bias after the conv")])
            bias = per_channel.mean(1)
        bias_np = bias.numpy() if bool(torch.any(bias != 0)) else None
        outputs = []
        for i, source in enumerate(sources):
            merged = _merge(maps[source])
            if len(merged.out_shape) == 1 and merged.kind == "conv" and not isinstance(graph.op(target), Output):
                raise UnsupportedModelError("lower_linear_regions", [Problem(
                    end, graph.op(end).kind.value, "a flattened convolution feeds neurons without a Linear")])
            op = _synapse(merged, bias_np if i == 0 else None)
            name = self._name(builder, graph, end, source, maps[source], paths, uses)
            if name in builder:
                builder.replace(name, op, [source])
            else:
                builder.add(name, op, [source])
            outputs.append(name)
            regions.append({"target": target, "source": source, "synapse": name, "op": op.kind.value,
                            "through": sorted({n for m in maps[source] for n in m.nodes})})
        return outputs
