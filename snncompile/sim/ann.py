"""Float evaluation of the graph's non-spiking ops (the ANN, and the host-side input encoding).

One function per op kind in a table; everything in float64 torch tensors of shape (N, *shape).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from snncompile.errors import SnnCompileError
from snncompile.ir.graph import Graph
from snncompile.ir.ops import (
    AdaptiveAvgPool2d,
    Add,
    AvgPool2d,
    BatchNorm,
    BiasEncoder,
    Concat,
    Conv2d,
    Dense,
    Flatten,
    Input,
    MaxPool2d,
    Op,
    Output,
    ReLU,
    SumPool2d,
)


def _t(arr: np.ndarray | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if arr is None else torch.tensor(np.asarray(arr), dtype=like.dtype, device=like.device)


def _dense(op: Dense, x: torch.Tensor) -> torch.Tensor:
    return F.linear(x.reshape(x.shape[0], -1), _t(op.weight, x), _t(op.bias, x))


def _conv(op: Conv2d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, _t(op.weight, x), _t(op.bias, x), op.stride, op.padding, op.dilation, op.groups)


def _batchnorm(op: BatchNorm, x: torch.Tensor) -> torch.Tensor:
    scale, shift = op.scale_shift()
    view = (1, -1) + (1,) * (x.dim() - 2)
    return x * _t(scale, x).view(view) + _t(shift, x).view(view)


def _avgpool(op: AvgPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, op.kernel, op.stride, op.padding, count_include_pad=True)


def _sumpool(op: SumPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, op.kernel, op.stride, op.padding, count_include_pad=True, divisor_override=1)


def _adaptive(op: AdaptiveAvgPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, op.output_size)


def _maxpool(op: MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, op.kernel, op.stride, op.padding, op.dilation)


def _relu(op: ReLU, x: torch.Tensor) -> torch.Tensor:
    return torch.relu(x) if op.upper is None else torch.clamp(x, 0.0, op.upper)


UNARY: dict[type, Callable[[Op, torch.Tensor], torch.Tensor]] = {
    Dense: _dense,
    Conv2d: _conv,
    BatchNorm: _batchnorm,
    ReLU: _relu,
    AvgPool2d: _avgpool,
    SumPool2d: _sumpool,
    MaxPool2d: _maxpool,
    AdaptiveAvgPool2d: _adaptive,
    Flatten: lambda op, x: x.reshape(x.shape[0], -1),
    Output: lambda op, x: x,
}


def evaluate(graph: Graph, x, *, dtype=torch.float64, device="cpu", upto: set[str] | None = None) -> dict[str, torch.Tensor]:
    """Values of every float op for a batch ``x`` (N, *input shape); one Input only.

    With ``upto``, only the ancestors of those nodes are evaluated (and the nodes themselves), and
    only those nodes' values are kept: an intermediate value is freed once its last user ran
    (DenseNet-121 at 224×224 holds hundreds of feature maps otherwise). Spiking ops cannot be
    evaluated here; use the time-stepped simulator.
    """
    (inp,) = graph.input_names()
    x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(device=device, dtype=dtype)
    wanted = None
    if upto is not None:
        wanted = set(upto) | graph.ancestors(upto)
    values: dict[str, torch.Tensor] = {}
    pending = None  # node -> users still to run (with ``upto``)
    if wanted is not None:
        pending = {n: sum(u in wanted for u in graph.users(n)) for n in wanted}
    for name, op in graph.nodes():
        if wanted is not None and name not in wanted:
            continue
        if isinstance(op, Input):
            values[name] = x
            continue
        args = [values[i] for i in graph.inputs(name)]
        if pending is not None:
            for i in graph.inputs(name):
                pending[i] -= 1
                if pending[i] == 0 and i not in upto:
                    del values[i]
        if isinstance(op, Add):
            values[name] = torch.stack(args).sum(0)
        elif isinstance(op, Concat):
            values[name] = torch.cat(args, dim=1)
        elif type(op) in UNARY:
            values[name] = UNARY[type(op)](op, args[0])
        else:
            raise SnnCompileError(f"node '{name}': {op.kind.value} has no float (ANN) evaluation")
    return values


def forward(graph: Graph, x, **kw) -> torch.Tensor:
    """The (single) output of a float graph for batch ``x``."""
    (out,) = graph.output_names()
    return evaluate(graph, x, upto={out}, **kw)[out]


def encode_inputs(graph: Graph, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Host side of a fixed-point graph: per BiasEncoder, (mant, exp, saturations) per sample.

    Computed one sample at a time in float64 on the CPU so that the result cannot depend on the
    batch size; Lava and the reference simulator both take their input from here.
    """
    with one_thread():
        return _encode_inputs(graph, x)


class one_thread:
    """Run tiny per-sample ops on one thread: torch's intra-op threads only cost time there
    (measured: a 1×8×8 float64 conv takes 0.14 ms on one thread, 4.5 ms on two of a busy machine)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)


# Multiply-accumulates (samples × MACs per sample) from which torch's intra-op threads pay: below,
# one thread (the digits models' layers, 10–20 M); above, all of them (a ResNet-20 layer on
# 256 samples, 600 M: weight calibration and its measurements 1.8x faster on 2 cores).
PARALLEL_MACS = 2**27


def threads_for(macs: float):
    """``one_thread()`` for work of fewer than ``PARALLEL_MACS`` multiply-accumulates, else a
    context that leaves torch's threads as they are."""
    import contextlib

    return one_thread() if macs < PARALLEL_MACS else contextlib.nullcontext()


def _encode_inputs(graph: Graph, x: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    encoders = graph.find(BiasEncoder)
    if not encoders:
        return {}
    sources = {e: graph.inputs(e)[0] for e in encoders}
    mants = {e: [] for e in encoders}
    exps = {e: [] for e in encoders}
    sats = {e: 0 for e in encoders}
    for sample in np.asarray(x, dtype=np.float64):
        values = evaluate(graph, sample[None], upto=set(sources.values()))
        for enc, src in sources.items():
            m, e, s = graph.op(enc).encode(values[src][0].numpy())
            mants[enc].append(m)
            exps[enc].append(e)
            sats[enc] += s
    return {e: (np.stack(mants[e]), np.stack(exps[e]), sats[e]) for e in encoders}
