"""The ``--device`` argument of the commands (``snncompile``, ``snncompile verify``), checked."""

from __future__ import annotations

import argparse


def device_arg(text: str) -> str:
    """``--device``'s check (argparse type): cpu, cuda or cuda:N, and CUDA only where there is one."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N, got '{text}'")
    if text.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"'{text}' requested but no CUDA device is available; use cpu")
    return text
