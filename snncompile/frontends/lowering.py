"""Pieces shared by the frontends' lowering walks (torch, ONNX)."""

from __future__ import annotations

from dataclasses import dataclass

from snncompile.ir import ops as ir


@dataclass
class Entry:
    """One IR node to be: the source node it comes from (None for the Input), its op, and the
    keys of its inputs; ``suffix`` tells apart several IR nodes made from one source node."""

    node: object
    op: ir.Op
    inputs: list[int]
    suffix: str = ""


class Reject(Exception):
    """Raised by a lowering: this node is unsupported, and ``hint`` says what to do."""

    def __init__(self, hint: str):
        super().__init__(hint)
        self.hint = hint
