"""Lava backend: run a fixed-point IR graph as Lava processes (Loihi2SimCfg, fixed_pt models).

Importing this package installs the import hook that lets lava-nc 0.10 load on Python 3.11
(see ``compat``) before anything imports ``lava``. Lava itself is imported on first use of
``run_lava`` and friends, so importing the package stays cheap.
"""

from snncompile.backends.lava import compat

compat.install()

_LAZY = {
    "run_lava": "snncompile.backends.lava.build",
    "build_network": "snncompile.backends.lava.build",
    "LavaNetwork": "snncompile.backends.lava.build",
    "check_graph": "snncompile.backends.lava.build",
    "SubtractiveLIF": "snncompile.backends.lava.processes",
    "SignedLIF": "snncompile.backends.lava.processes",
}

__all__ = ["compat", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
