"""Make lava-nc 0.10 importable on Python 3.11+ with an import hook, without touching its files.

Lava 0.10's ``lava/magma/compiler/var_model.py`` declares dataclass fields such as
``x: ByteEncoder = ByteEncoder()``. Since Python 3.11 ``dataclasses`` refuses an unhashable
instance as a default ("mutable default ... use default_factory"), so every Lava import fails.
The hook below serves that one module from its own source file with each ``= ByteEncoder()``
rewritten to ``= __import__('dataclasses').field(default_factory=ByteEncoder)`` (same line
numbers, same ``__file__``), and leaves every other module to the normal import system.
On older Pythons, or a Lava whose source no longer has the pattern, the rewrite is a no-op.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys

TARGET = "lava.magma.compiler.var_model"

_MUTABLE_DEFAULT = re.compile(r"=\s*ByteEncoder\(\)")
_FACTORY = "= __import__('dataclasses').field(default_factory=ByteEncoder)"


def patch_source(source: str) -> str:
    """The var_model source with its ``ByteEncoder()`` defaults turned into default factories."""
    return _MUTABLE_DEFAULT.sub(_FACTORY, source)


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads the target from source every time, rewritten; never reads or writes its .pyc
    (a cached .pyc holds the unpatched code, which compiles fine but fails when executed)."""

    def get_code(self, fullname):
        source = self.get_data(self.path).decode("utf-8")
        return compile(patch_source(source), self.path, "exec", dont_inherit=True)


class LavaVarModelFinder(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that answers for ``lava.magma.compiler.var_model`` only."""

    snncompile_lava_hook = True  # how install() recognises it, even from a reloaded module

    def find_spec(self, fullname, path, target=None):
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec  # not a plain source file: let the normal machinery deal with it
        loader = _PatchedSourceLoader(fullname, spec.origin)
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=loader, submodule_search_locations=None
        )


def installed() -> bool:
    return any(getattr(f, "snncompile_lava_hook", False) for f in sys.meta_path)


def install() -> None:
    """Put the finder first on ``sys.meta_path``; calling it again changes nothing."""
    if not installed():
        sys.meta_path.insert(0, LavaVarModelFinder())
