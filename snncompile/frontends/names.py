"""IR node names for frontends: readable, identifier-like, unique."""

from __future__ import annotations

import re


def sanitize(text: str) -> str:
    """Runs of non-word characters become one underscore (``/layer1/conv`` -> ``layer1_conv``)."""
    return re.sub(r"\W+", "_", str(text)).strip("_") or "node"


def unique(base: str, used: set) -> str:
    """``base``, or ``base_1``, ``base_2``, ... whichever is not in ``used``; records it there."""
    name, i = base, 1
    while name in used:
        name, i = f"{base}_{i}", i + 1
    used.add(name)
    return name
