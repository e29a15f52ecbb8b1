"""Lava backend: run a fixed-point IR graph as Lava processes (Loihi2SimCfg, fixed_pt models).

Importing this package installs the import hook that lets lava-nc 0.10 load on Python 3.11
(see ``compat``); it must happen before anything imports ``lava``.
"""

from snncompile.backends.lava import compat

compat.install()

from snncompile.backends.lava.build import LavaNetwork, build_network, run_lava  # noqa: E402
from snncompile.backends.lava.processes import SubtractiveLIF  # noqa: E402

__all__ = ["LavaNetwork", "SubtractiveLIF", "build_network", "compat", "run_lava"]
