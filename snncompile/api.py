"""The compiler's Python API: load, convert, quantize, simulate, verify against Lava, report.

A face only: the stages and the run that chains them live in ``snncompile.compiler``.
"""

from __future__ import annotations

from snncompile.compiler import (
    CALIBRATIONS,
    TARGETS,
    Compiled,
    Inspection,
    Options,
    accuracy,
    check_outdir,
    compile_model,
    convert,
    fidelity_gate,
    inspect_model,
    load_data,
    load_model,
    prepare,
    to_snn,
)

__all__ = [
    "CALIBRATIONS", "TARGETS", "Compiled", "Inspection", "Options", "accuracy", "check_outdir",
    "compile_model", "convert", "fidelity_gate", "inspect_model", "load_data", "load_model", "prepare", "to_snn",
]
