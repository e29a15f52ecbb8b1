"""The values flowing along the fx graph during the torch frontend's walk, shared by the walk
(``frontends.torch``) and the lowering rules of the spiking ops (``frontends.snn_ops``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, eq=False)
class Act:
    """An activation: the output of IR entry ``key``; ``shape`` includes the batch dim."""

    key: int
    shape: tuple | None


@dataclass(frozen=True, eq=False)
class Const:
    """A parameter, buffer or constant tensor (or one folded from them)."""

    tensor: torch.Tensor


@dataclass(frozen=True, eq=False)
class Items:
    """A tuple result, e.g. native batch norm's (output, saved mean, saved rstd)."""

    items: tuple
