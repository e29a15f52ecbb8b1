"""The one error hierarchy of snncompile: every failure a user can cause is a SnnCompileError."""

from __future__ import annotations

from dataclasses import dataclass


class SnnCompileError(Exception):
    """Base class. The CLI prints ``str(error)`` on one line and exits with ``exit_code``."""

    exit_code = 2  # bad input (snncompile.cli documents every code)


@dataclass(frozen=True)
class Problem:
    """One unsupported or invalid thing found in a model: where, what, and what to do."""

    node: str
    op: str
    hint: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.hint}"


class UnsupportedModelError(SnnCompileError):
    """A frontend or backend found things it cannot handle; all of them are listed at once."""

    def __init__(self, source: str, problems: list[Problem]):
        self.source = source
        self.problems = list(problems)
        listed = "; ".join(str(p) for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} unsupported node(s): {listed}")


class ModelLoadError(SnnCompileError):
    """A model file could not be read."""


class GraphError(SnnCompileError):
    """The IR graph is malformed; the message names the node."""

    def __init__(self, node: str, message: str):
        self.node = node
        super().__init__(f"node '{node}': {message}")


class PassError(SnnCompileError):
    """A pass produced an invalid graph or could not run; names the pass and those before it."""


class DataError(SnnCompileError):
    """Input data (a .npz file, a named data set) is missing or malformed."""


class BackendError(SnnCompileError):
    """A backend cannot express or run the graph."""


class ResourceError(SnnCompileError):
    """The model does not fit the chips it was given: names the layers and the shortfall."""


class UnsafeModelError(ModelLoadError):
    """A model file could only be read by unpickling it, which can run arbitrary code."""


class OverflowLimitError(SnnCompileError):
    """``--strict``: a weight, bias, threshold or state value was clipped or wrapped."""

    exit_code = 4
