"""Directly trained spiking networks that compile to Loihi 2: neurons, synapses, residual blocks.

Two modes, one module tree:

- **Training / float simulation** (ordinary PyTorch): spiking tensors are time-major,
  (T, N, *shape). The host-side stem (a plain ``torch.nn.Conv2d``/``Linear`` on the static input)
  runs once; ``repeat`` broadcasts its current over T steps.
- **Export** (``torch.export.export`` of the same model on a (N, *input) example): tensors have no
  time axis; each neuron becomes one custom op (``snncompile.nn.ops``), each synapse its plain
  aten op, and the torch frontend turns them into the IR graph NIR import would give
  (synaptic op -> neuron). ``delay`` and ``repeat`` vanish: the IR's time-stepped semantics add
  them back.

Discrete-time semantics (the same as ``snncompile.sim.snn.simulate(..., delay=1)`` and, up to
fixed-point rounding, as Loihi 2):

    neuron (LIF, IF = LIF with beta = 1), x[t] the sum of its inputs:
        v[t] = beta·v[t−1] + x[t];   s[t] = v[t] > threshold  (strict);
        reset zero: v[t] = 0 where s[t];  subtract: v[t] −= threshold where s[t];  v[−1] = 0.
    Integrator (readout):  v[t] = v[t−1] + x[t]; the model's output is v[T−1].
    synapse (``Conv2d``, ``Linear`` below) between neurons:  y[t] = W·s[t−1], y[0] = 0
        (one step of delay, as every Loihi synaptic layer; no bias: a bias would be a constant
        neuron current on the chip from step 0 but is delayed in the float simulator).
    host stem (plain torch layers on the input):  y[t] = W·x + b for every t, no delay.

The backward pass replaces dH(v − θ)/dv by a fast-sigmoid surrogate 1 / (1 + k·|v − θ|)²
(k = ``slope``); resets are detached (no gradient through the reset).

Residual blocks (``SpikingBlock``, ``SpikingStage``), a(x) = sn2(conv2(sn1(conv1(x)))):

    membrane_add:  out = sn2(conv2(sn1(conv1(x))) + delay(x))   the shortcut synapses (identity,
                   one step late like every synapse) onto the same neurons as the branch
    sew_add:       out = a(x) + x                                graded: 0, 1, 2, ... ; lowered by
                   duplicating every synapse that reads the sum (one copy per addend population)
    sew_iand:      out = relay(delay(x) − delay(a(x)))          a relay neuron (threshold 0.5,
                   beta 0, reset zero): out[t] = (NOT a[t−1]) AND x[t−1], binary, one step late
    dense_add:     with out_0 = x (the stage input):
                   out_k = sn2(conv2(sn1(conv1(out_{k−1}))) + delay(out_0) + … + delay(out_{k−1}))
                   every block's output spikes are added (membrane-level, binary) into every later
                   block of the stage; lowered as fan-in: one identity synapse set from each
                   earlier output population onto block k's output neurons (k sets for block k).
                   (Summing spikes *before* block k's conv1 instead, in_k = x + Σ out_j, would be
                   exactly SEW-ADD's chain x + Σ a_j: the same function, so not offered twice.)
"""

from __future__ import annotations

import torch
from torch import nn

from snncompile.errors import SnnCompileError
from snncompile.nn import ops  # noqa: F401  (registers the custom ops)

CONNECTIONS = ("membrane_add", "sew_add", "sew_iand", "dense_add")
RESETS = ("zero", "subtract")


def exporting() -> bool:
    """True while ``torch.export`` traces the model (per-step structure, no time axis)."""
    return torch.compiler.is_exporting()


def repeat(x: torch.Tensor, steps: int) -> torch.Tensor:
    """A static (host) value as a (T, N, ...) input held for ``steps`` steps; identity on export."""
    if exporting():
        return x
    return x.unsqueeze(0).expand(steps, *x.shape)


def delay(s: torch.Tensor) -> torch.Tensor:
    """y[t] = s[t−1], y[0] = 0 along the time axis; identity on export (the IR adds it)."""
    if exporting():
        return s
    return torch.cat([torch.zeros_like(s[:1]), s[:-1]])


class _Spike(torch.autograd.Function):
    """H(z) forward (z > 0), fast-sigmoid surrogate backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, slope: float) -> torch.Tensor:
        ctx.save_for_backward(z)
        ctx.slope = slope
        return (z > 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        return grad / (1 + ctx.slope * z.abs()) ** 2, None


def spike(z: torch.Tensor, slope: float = 5.0) -> torch.Tensor:
    """Heaviside step of ``z`` with a fast-sigmoid surrogate gradient."""
    return _Spike.apply(z, slope)


class LIF(nn.Module):
    """Leaky integrate-and-fire population (current-free): v[t] = beta·v[t−1] + x[t],
    s[t] = v[t] > threshold, then reset (``zero`` or ``subtract``); v[−1] = 0.

    Input and output are (T, N, *shape) in training; on export it is the custom op
    ``snncompile::lif_neuron`` (IR ``LIF(alpha=0, beta)``; the frontend maps beta = 1 to ``IF``).
    """

    def __init__(self, threshold: float = 1.0, beta: float = 0.9, reset: str = "zero", slope: float = 5.0):
        super().__init__()
        if reset not in RESETS:
            raise SnnCompileError(f"reset must be one of {RESETS}, not {reset!r}")
        if not 0.0 <= beta <= 1.0 or threshold <= 0:
            raise SnnCompileError("need 0 <= beta <= 1 and threshold > 0")
        self.threshold, self.beta, self.reset, self.slope = float(threshold), float(beta), reset, slope

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, beta={self.beta}, reset={self.reset}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting():
            return torch.ops.snncompile.lif_neuron(x, self.threshold, self.beta, self.reset == "subtract")
        v = torch.zeros_like(x[0])
        out = []
        for xt in x:
            v = self.beta * v + xt
            s = spike(v - self.threshold, self.slope)
            if self.reset == "zero":
                v = v * (1 - s.detach())
            else:
                v = v - s.detach() * self.threshold
            out.append(s)
        return torch.stack(out)


class IF(LIF):
    """Integrate-and-fire: a LIF with beta = 1 (default reset by subtraction)."""

    def __init__(self, threshold: float = 1.0, reset: str = "subtract", slope: float = 5.0):
        super().__init__(threshold=threshold, beta=1.0, reset=reset, slope=slope)


class Integrator(nn.Module):
    """Non-spiking readout: v[t] = v[t−1] + x[t]; returns v[T−1] (N, *shape).
    On export the custom op ``snncompile::integrator`` (IR ``Integrator``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if exporting():
            return torch.ops.snncompile.integrator(x)
        return x.sum(0)


INIT_GAIN = 3.0  # binary inputs at low rates: torch's default init leaves deep layers silent


class Conv2d(nn.Conv2d):
    """A synapse between neurons: y[t] = W ⋆ s[t−1] (one step of delay), applied over time.
    No bias by default; weights start at ``INIT_GAIN`` × torch's default init."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)
        with torch.no_grad():
            self.weight.mul_(INIT_GAIN)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if exporting():
            return super().forward(s)
        s = delay(s)
        y = super().forward(s.flatten(0, 1))
        return y.unflatten(0, s.shape[:2])


class Linear(nn.Linear):
    """A synapse between neurons reading any shape in C-order: y[t] = W·flatten(s[t−1])."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("bias", False)
        super().__init__(*args, **kwargs)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        if exporting():
            return super().forward(s.flatten(1))
        return super().forward(delay(s).flatten(2))


class SewIAnd(nn.Module):
    """out = (NOT a) AND b through a relay neuron, one step late on both paths:
    r[t] = relay(b[t−1] − a[t−1]) with a LIF(threshold 0.5, beta 0, reset zero), so
    r[t] = 1 exactly when b[t−1] = 1 and a[t−1] = 0. On export: ``snncompile::sew_iand``."""

    def __init__(self, slope: float = 5.0):
        super().__init__()
        self.relay = LIF(threshold=0.5, beta=0.0, reset="zero", slope=slope)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if exporting():
            return torch.ops.snncompile.sew_iand(a, b)
        return self.relay(delay(b) - delay(a))


def make_neuron(kind: str, threshold: float = 1.0, beta: float = 0.9) -> LIF:
    """``lif``: leaky, reset to zero; ``if``: no leak, reset by subtraction."""
    if kind == "lif":
        return LIF(threshold=threshold, beta=beta, reset="zero")
    if kind == "if":
        return IF(threshold=threshold)
    raise SnnCompileError(f"neuron must be 'lif' or 'if', not {kind!r}")


class SpikingBlock(nn.Module):
    """conv1 → sn1 → conv2 → sn2 with a residual ``connection`` (see the module docstring).
    ``forward(x, earlier)``: ``earlier`` lists the stage's earlier outputs (dense_add only)."""

    def __init__(self, channels: int, connection: str, neuron: str = "lif", beta: float = 0.9):
        super().__init__()
        if connection not in CONNECTIONS:
            raise SnnCompileError(f"connection must be one of {CONNECTIONS}, not {connection!r}")
        self.connection = connection
        self.conv1 = Conv2d(channels, channels, 3, padding=1)
        self.sn1 = make_neuron(neuron, beta=beta)
        self.conv2 = Conv2d(channels, channels, 3, padding=1)
        self.sn2 = make_neuron(neuron, beta=beta)
        if connection == "sew_iand":
            self.iand = SewIAnd()

    def forward(self, x: torch.Tensor, earlier: list[torch.Tensor] | None = None) -> torch.Tensor:
        h = self.conv2(self.sn1(self.conv1(x)))
        if self.connection == "membrane_add":
            return self.sn2(h + delay(x))
        if self.connection == "dense_add":
            for s in earlier or [x]:
                h = h + delay(s)
            return self.sn2(h)
        a = self.sn2(h)
        if self.connection == "sew_add":
            return a + x
        return self.iand(a, x)


class SpikingStage(nn.Module):
    """``blocks`` SpikingBlocks in sequence; for ``dense_add`` block k also receives every
    earlier output out_0 = x, …, out_{k−1} into its output membrane."""

    def __init__(self, channels: int, blocks: int, connection: str, neuron: str = "lif", beta: float = 0.9):
        super().__init__()
        self.connection = connection
        self.blocks = nn.ModuleList(SpikingBlock(channels, connection, neuron, beta) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.connection != "dense_add":
            for block in self.blocks:
                x = block(x)
            return x
        outs = [x]
        for block in self.blocks:
            outs.append(block(outs[-1], outs))
        return outs[-1]


class SpikingResNet(nn.Module):
    """A small spiking ResNet for (1, 8, 8) images: host stem conv → neuron → stage of residual
    blocks → Linear synapse → Integrator readout. forward(x) takes static images (N, 1, 8, 8) and
    returns the readout's v after ``steps`` steps (N, classes); divide by steps for logits."""

    def __init__(self, connection: str = "membrane_add", neuron: str = "lif", channels: int = 8,
                 blocks: int = 2, steps: int = 16, classes: int = 10, size: int = 8, beta: float = 0.9):
        super().__init__()
        self.steps = steps
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.sn0 = make_neuron(neuron, beta=beta)
        self.stage = SpikingStage(channels, blocks, connection, neuron, beta)
        self.fc = Linear(channels * size * size, classes)
        self.readout = Integrator()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.sn0(repeat(self.stem(x), self.steps))
        return self.readout(self.fc(self.stage(s)))
