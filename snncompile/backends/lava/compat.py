"""Make lava-nc 0.10 importable on Python 3.11+ with an import hook, without touching its files.

1. ``lava/magma/compiler/var_model.py`` declares dataclass fields such as
   ``x: ByteEncoder = ByteEncoder()``. Since Python 3.11 ``dataclasses`` refuses an unhashable
   instance as a default ("mutable default ... use default_factory"), so every Lava import
   fails. Each ``= ByteEncoder()`` becomes
   ``= __import__('dataclasses').field(default_factory=ByteEncoder)``.
2. ``lava/magma/runtime/message_infrastructure/multiprocessing.py`` calls
   ``mp.set_start_method('fork')`` at import, which raises "context has already been set" when
   anything fixed the start method before, even to 'fork' (``mp.get_start_method()`` alone
   fixes it). The call is skipped when the method already is 'fork'; any other fixed method
   still raises, as Lava needs 'fork'.

The hook serves exactly those modules from their own source files, rewritten line for line
(same line numbers, same ``__file__``), and leaves every other module to the normal import
system. A Lava whose source no longer has a pattern is loaded unchanged.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import re
import sys

VAR_MODEL = "lava.magma.compiler.var_model"
MULTIPROCESSING = "lava.magma.runtime.message_infrastructure.multiprocessing"

_MUTABLE_DEFAULT = re.compile(r"=\s*ByteEncoder\(\)")
_FACTORY = "= __import__('dataclasses').field(default_factory=ByteEncoder)"
_SET_FORK = re.compile(r"""mp\.set_start_method\((['"])fork\1\)""")
_SET_FORK_UNLESS_FORK = "(mp.get_start_method(allow_none=True) == 'fork' or mp.set_start_method('fork'))"


def patch_source(source: str) -> str:
    """The var_model source with its ``ByteEncoder()`` defaults turned into default factories."""
    return _MUTABLE_DEFAULT.sub(_FACTORY, source)


def patch_start_method(source: str) -> str:
    """Lava's multiprocessing source, setting 'fork' only when it is not the method already."""
    return _SET_FORK.sub(_SET_FORK_UNLESS_FORK, source)


PATCHES = {VAR_MODEL: patch_source, MULTIPROCESSING: patch_start_method}


class _PatchedSourceLoader(importlib.machinery.SourceFileLoader):
    """Loads a module from its source every time, rewritten; never reads or writes its .pyc
    (a cached .pyc holds the unpatched code)."""

    def __init__(self, fullname, path, patch):
        super().__init__(fullname, path)
        self._patch = patch

    def get_code(self, fullname):
        source = self.get_data(self.path).decode("utf-8")
        return compile(self._patch(source), self.path, "exec", dont_inherit=True)


class LavaCompatFinder(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that answers for the modules in ``PATCHES`` only."""

    snncompile_lava_hook = True  # how install() recognises it, even from a reloaded module

    def find_spec(self, fullname, path, target=None):
        patch = PATCHES.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec  # not a plain source file: let the normal machinery deal with it
        loader = _PatchedSourceLoader(fullname, spec.origin, patch)
        return importlib.util.spec_from_file_location(fullname, spec.origin, loader=loader)


def installed() -> bool:
    return any(getattr(f, "snncompile_lava_hook", False) for f in sys.meta_path)


def install() -> None:
    """Put the finder first on ``sys.meta_path``; calling it again changes nothing."""
    if not installed():
        sys.meta_path.insert(0, LavaCompatFinder())
