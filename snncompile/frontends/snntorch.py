"""snnTorch frontend: a module built from ``snntorch.Leaky`` neurons into the float IR.

Each ``Leaky`` is swapped (in a copy of the module) for ``snncompile.nn.LIF`` with the same
parameters, then the copy goes through the torch frontend (``torch.export``). snnTorch 1.0.0's
Leaky, with input x[t] and its default ``reset_delay=True``:

    r[t] = H(mem[t−1] − θ)                     (did the previous step spike)
    zero:      mem[t] = beta·(1 − r[t])·mem[t−1] + x[t]
    subtract:  mem[t] = beta·mem[t−1] + x[t] − r[t]·θ
    spk[t] = H(mem[t] − θ)  (strict: mem > θ)

Reset to zero is exactly the IR's LIF(alpha=0, beta, reset zero): v[t] = beta·v[t−1] + x[t] with
v set to 0 after a spike. Reset by subtraction equals the IR's subtract only when beta = 1 (snnTorch
subtracts θ after the decay, the IR before it), so subtract with beta < 1 is refused.
``reset_delay=False`` gives the same spike trains (it only resets the returned mem early).
snnTorch has no synaptic delay; the compiled network (and ``sim.snn.simulate(..., delay=1)``)
delays each synapse between neurons by one step, so layer k's spikes arrive k − 1 steps later.

Supported: modules whose forward calls each Leaky as ``spk = leaky(x)`` (``init_hidden=True``,
e.g. an ``nn.Sequential``; ``output=True`` on the last one is fine, its spikes are kept), scalar
beta and threshold, ``graded_spikes_factor`` 1, no inhibition, no state quantization.
"""

from __future__ import annotations

import copy

import torch

import snncompile.nn as snn
from snncompile.errors import Problem, UnsupportedModelError
from snncompile.frontends.torch import from_module
from snncompile.ir.graph import Graph


class _LeakyAsLIF(snn.LIF):
    """The Leaky's stand-in: returns the spikes only, as an ``init_hidden`` Leaky does."""


def _scalar(value) -> float | None:
    t = torch.as_tensor(value).detach().flatten()
    return float(t[0]) if t.numel() and bool((t == t[0]).all()) else None


def _convert(leaky, path: str, problems: list[Problem]) -> _LeakyAsLIF | None:
    beta, threshold = _scalar(leaky.beta), _scalar(leaky.threshold)
    mode = {0: "subtract", 1: "zero"}.get(int(leaky.reset_mechanism_val))
    found = []
    if beta is None or threshold is None:
        found.append("beta and threshold must be one value per layer")
    if mode is None:
        found.append("reset_mechanism 'none' has no Loihi mapping; use 'zero' or 'subtract'")
    elif mode == "subtract" and beta is not None and beta != 1.0:
        found.append(f"reset by subtraction with beta={beta:.6g} (snnTorch subtracts after the decay); "
                     "use reset_mechanism='zero', or beta=1")
    if _scalar(leaky.graded_spikes_factor) != 1.0 or leaky.inhibition or leaky.state_quant:
        found.append("graded_spikes_factor, inhibition and state_quant are not supported")
    if not leaky.init_hidden:
        found.append("build the Leaky with init_hidden=True so that forward() returns the spikes")
    for hint in found:
        problems.append(Problem(path, "Leaky", hint))
    if found:
        return None
    return _LeakyAsLIF(threshold=threshold, beta=min(max(beta, 0.0), 1.0), reset=mode)


def from_snntorch(module: torch.nn.Module, example_input: torch.Tensor) -> Graph:
    """The float IR graph of an snnTorch module (per-step forward on a static input)."""
    import snntorch

    clone = copy.deepcopy(module)
    problems: list[Problem] = []

    def swap(parent: torch.nn.Module, prefix: str) -> None:
        for name, child in parent.named_children():
            path = f"{prefix}{name}"
            if isinstance(child, snntorch.Leaky):
                lif = _convert(child, path, problems)
                if lif is not None:
                    setattr(parent, name, lif)
            elif isinstance(child, snntorch.SpikingNeuron):
                problems.append(Problem(path, type(child).__name__, "only snntorch.Leaky is supported"))
            else:
                swap(child, path + ".")

    swap(clone, "")
    if problems:
        raise UnsupportedModelError(type(module).__name__, problems)
    return from_module(clone, example_input)
