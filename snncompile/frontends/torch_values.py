"""The values flowing along the fx graph during the torch frontend's walk, and the helpers that read
them, shared by the walk (``frontends.torch``) and the lowering rules (``frontends.torch_rules``,
``frontends.snn_ops``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import fx

from snncompile.frontends.lowering import Reject
from snncompile.ir.ops import owned

BROKEN = -1  # the key of an activation produced by an unsupported node


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


def _dims(node: fx.Node) -> tuple | None:
    """The node's shape with concrete sizes as ints and symbolic ones as strings."""
    val = node.meta.get("val")
    return _shape_of(val) if isinstance(val, torch.Tensor) else None


def _shape_of(tensor: torch.Tensor) -> tuple:
    dims = []
    for d in tensor.shape:
        if isinstance(d, torch.SymInt):
            concrete = d.node.maybe_as_int()
            dims.append(concrete if concrete is not None else str(d))
        else:
            dims.append(int(d))
    return tuple(dims)


def _broken(val):
    if isinstance(val, torch.Tensor):
        return Act(BROKEN, _shape_of(val))
    if isinstance(val, (tuple, list)):
        return Items(tuple(_broken(v) for v in val))
    return None


def _np(tensor: torch.Tensor | None) -> np.ndarray | None:
    if tensor is None:
        return None
    tensor = tensor.detach()
    values = tensor.to("cpu", torch.float64)
    if values.untyped_storage().data_ptr() == tensor.untyped_storage().data_ptr():
        return values.numpy()  # the model's own float64 tensor: the op copies it
    return owned(values.numpy())  # a fresh float64 copy: the op takes it as is


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        values = [int(v) for v in value]
        return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
    return int(value), int(value)


def _act(value, what: str = "input") -> Act:
    if isinstance(value, Act):
        return value
    raise Reject(f"its {what} must be computed from the model's input, not a constant")


def _const(value, what: str, optional: bool = False) -> torch.Tensor | None:
    if isinstance(value, Const):
        return value.tensor
    if value is None and optional:
        return None
    if isinstance(value, Act) and value.key == BROKEN:
        raise Reject(f"its {what} comes from an unsupported node")
    if isinstance(value, Act):
        raise Reject(f"its {what} must be a parameter or constant, not computed from the input")
    raise Reject(f"its {what} is not a tensor")


def _static(act: Act, rank: int | None = None) -> tuple[int, ...]:
    """The activation's non-batch dims, all static; optionally of a given rank."""
    shape = act.shape or ()
    dims = tuple(shape[1:])
    if not all(isinstance(d, int) for d in dims):
        raise Reject(f"input shape {shape} has dynamic non-batch dims")
    if rank is not None and len(dims) != rank:
        layout = {1: "(features,)", 3: "(C, H, W)"}.get(rank, f"{rank} dims")
        raise Reject(f"expects an input of shape {layout} per sample, got {dims}")
    return dims
