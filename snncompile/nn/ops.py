"""Custom torch ops that keep spiking neurons whole through ``torch.export``.

Registered with ``torch.library`` under the ``snncompile`` namespace when this module is
imported (the torch frontend imports it, so a saved program that uses them loads). An exported
program is the *per-step* structure of a network: each op below stands for a whole neuron
population whose state the IR neuron carries from step to step. Run eagerly, each computes one
step from rest (v[−1] = 0), which is also what the fake (meta) kernels describe by shape.

    snncompile::lif_neuron(x, threshold, beta, subtract) -> s     IR LIF(alpha=0, beta) / IF (beta=1)
    snncompile::integrator(x) -> v                                 IR Integrator (non-spiking readout)
    snncompile::sew_iand(a, b) -> (NOT a) AND b                    relay neuron (see snncompile.nn)
"""

from __future__ import annotations

import torch

NAMESPACE = "snncompile"


@torch.library.custom_op(f"{NAMESPACE}::lif_neuron", mutates_args=())
def lif_neuron(x: torch.Tensor, threshold: float, beta: float, subtract: bool) -> torch.Tensor:
    """One step from rest: s = x > threshold (v[−1] = 0, so beta and the reset do not act)."""
    return (x > threshold).to(x.dtype)


@lif_neuron.register_fake
def _lif_neuron_fake(x, threshold, beta, subtract):
    return torch.empty_like(x)


@torch.library.custom_op(f"{NAMESPACE}::integrator", mutates_args=())
def integrator(x: torch.Tensor) -> torch.Tensor:
    """One step from rest: v = x."""
    return x.clone()


@integrator.register_fake
def _integrator_fake(x):
    return torch.empty_like(x)


@torch.library.custom_op(f"{NAMESPACE}::sew_iand", mutates_args=())
def sew_iand(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(NOT a) AND b on spike values 0/1 (the relay's one step)."""
    return (1 - a) * b


@sew_iand.register_fake
def _sew_iand_fake(a, b):
    return torch.empty_like(b)
