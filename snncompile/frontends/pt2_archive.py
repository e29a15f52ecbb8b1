"""Read a torch.export.save file without running pickled code: check the archive, then load it.

``torch.export.load`` (torch 2.13, ``torch/export/pt2_archive/_package.py`` and
``torch/_export/serde/serialize.py``) is not safe on an untrusted file. It calls
``torch.load(..., weights_only=False)`` on every weight or constant whose config entry says
``use_pickle``, ``pickle.loads`` on "opaque" constants, the TorchScript unpickler on custom
objects, and loads compiled AOTInductor libraries found under ``data/aotinductor/``. Its sample
inputs and the 2.7-era legacy layout go through ``torch.load(weights_only=True)`` but fall back
to ``weights_only=False`` when that fails.

It also evaluates strings of the archive's JSON: ``sympy.sympify`` on every symbolic expression
and ``exec`` on guard code, and it calls the operators the graph names; it allocates what the
weights' sizes declare. ``frontends/pt2_json.py`` checks all of that against grammars and budgets.

So the file is read once into memory and its bytes are checked first: only the entries of a
plain exported program are allowed (JSON, raw tensor bytes, and sample inputs that load with
``weights_only=True``), every JSON document passes ``pt2_json``'s checks, and the sizes the zip
declares fit the budget; torch.export.load then reads those same bytes, so the file cannot change
between the check and the load.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import typing
import zipfile
from pathlib import Path

import torch

from snncompile.errors import ModelLoadError
from snncompile.frontends import pt2_json

SAVE_HINT = "save it with torch.export.save(torch.export.export(model.eval(), (example,)), path)"

# Entries of a plain exported program, relative to the archive's top folder.
_ALLOWED = [
    re.compile(pattern)
    for pattern in (
        r"archive_format",
        r"archive_version",
        r"byteorder",
        r"\.data/version",
        r"\.data/serialization_id",
        r"models/[\w.-]+\.json",
        r"data/weights/[\w.-]+_weights_config\.json",
        r"data/weights/weight_\d+",
        r"data/constants/[\w.-]+_constants_config\.json",
        r"data/constants/tensor_\d+",
        r"data/sample_inputs/[\w.-]+\.pt",
        r"extra/[^/]+",
    )
]

MAX_ARCHIVE_BYTES = 4 << 30  # everything the zip declares, inflated
MAX_JSON_BYTES = 256 << 20  # one JSON document
MAX_INFLATION = 100  # a deflated entry may grow this much (torch.export.save stores, never deflates)

_PAYLOAD_NAMES = {
    "data/weights/": re.compile(r"weight_\d+"),
    "data/constants/": re.compile(r"tensor_\d+"),
}


def read_exported_program(path: str | Path) -> torch.export.ExportedProgram:
    """The ExportedProgram in ``path``; ModelLoadError when it is missing, foreign or unsafe."""
    path = Path(path)
    if not path.is_file():
        hint = "pass a file written by torch.export.save"
        raise ModelLoadError(f"{path}: model file not found; {hint}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the file ({exc.strerror})") from None
    refusal = check_archive(data)
    if refusal:
        raise ModelLoadError(f"{path}: {refusal}; {SAVE_HINT}")
    # torch logs tracebacks (torch.export, fake tensors) before raising on a damaged archive:
    # the error below says it in one line
    logging.disable(logging.CRITICAL)
    try:
        with _schema_hints_once():
            program = torch.export.load(io.BytesIO(data))
    except Exception as exc:  # torch raises many types for a damaged archive
        reason = f"{type(exc).__name__}: {_first_line(exc)}"
        raise ModelLoadError(f"{path}: torch.export.load failed ({reason}); {SAVE_HINT}") from exc
    finally:
        logging.disable(logging.NOTSET)
    if not isinstance(program, torch.export.ExportedProgram):
        raise ModelLoadError(f"{path}: does not hold an exported program; {SAVE_HINT}")
    return program


class _TypeHintsOnce:
    """``typing`` as torch's serde module sees it while it loads, with ``get_type_hints`` of each
    schema class computed once instead of once per JSON object it reads (ResNet-18: 3,994 calls,
    about a third of torch.export.load); the hints of a class never change."""

    def __init__(self):
        self._hints: dict = {}

    def __getattr__(self, name: str):
        return getattr(typing, name)

    def get_type_hints(self, obj, globalns=None, localns=None, include_extras=False):
        key = (obj, id(globalns), id(localns), include_extras)
        if key not in self._hints:
            self._hints[key] = typing.get_type_hints(obj, globalns, localns, include_extras)
        return self._hints[key]


@contextlib.contextmanager
def _schema_hints_once():
    try:
        from torch._export.serde import serialize
    except ImportError:  # another torch layout: load as is
        serialize = None
    if getattr(serialize, "typing", None) is not typing:
        yield
        return
    serialize.typing = _TypeHintsOnce()
    try:
        yield
    finally:
        serialize.typing = typing


def check_archive(data: bytes) -> str | None:
    """Why ``data`` is not a plain torch.export archive, or None when it is one."""
    if not zipfile.is_zipfile(io.BytesIO(data)):
        return "not a torch.export archive (not a zip file)"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return _check_entries(archive)
    except Exception as exc:  # zipfile and zlib raise many types for damaged data
        return f"damaged archive ({type(exc).__name__}: {_first_line(exc)})"


def _check_entries(archive: zipfile.ZipFile) -> str | None:
    names = [n for n in archive.namelist() if not n.endswith("/")]
    if len(set(names)) != len(names):
        # two entries of one name could be read differently here and by torch's zip reader
        return "the archive holds duplicate entries"
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or any("/" not in n for n in names):
        return "not a torch.export archive (no single top folder)"
    (top,) = tops
    entries = {n.split("/", 1)[1]: n for n in names}
    if "data.pkl" in entries:
        return "a torch.save file (a pickled module or state_dict), not a torch.export program"
    if "archive_format" not in entries or archive.read(entries["archive_format"]) != b"pt2":
        return "not a torch.export archive (no archive_format 'pt2')"
    if "models/model.json" not in entries:
        return "the archive holds no exported program named 'model'"
    foreign = [e for e in sorted(entries) if not any(p.fullmatch(e) for p in _ALLOWED)]
    if foreign:
        return f"the archive holds entries snncompile does not load: {', '.join(foreign[:3])}"
    problem = _check_sizes(archive, entries)
    if problem:
        return problem
    record_bytes = {entry: archive.getinfo(name).file_size for entry, name in entries.items()}
    for entry, name in entries.items():
        if entry.endswith("_config.json"):
            problem = _check_payload_config(entry, archive.read(name), record_bytes)
        elif entry.startswith("models/"):
            problem = _check_model(entry, archive.read(name))
        elif entry.startswith("data/sample_inputs/"):
            problem = _check_sample_inputs(entry, archive.read(name))
        else:
            continue
        if problem:
            return problem
    return None


def _check_sizes(archive: zipfile.ZipFile, entries: dict[str, str]) -> str | None:
    """The sizes the zip declares (what reading it would inflate) against the budget; zipfile
    never reads more than an entry declares."""
    total = 0
    for entry, name in entries.items():
        info = archive.getinfo(name)
        total += info.file_size
        if entry.endswith(".json") and info.file_size > MAX_JSON_BYTES:
            return f"{entry} declares {info.file_size} bytes, more than {MAX_JSON_BYTES >> 20} MiB"
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(1 << 20, MAX_INFLATION * info.compress_size):
            return (f"{entry} inflates from {info.compress_size} to {info.file_size} bytes "
                    "(a zip bomb?)")
    if total > MAX_ARCHIVE_BYTES:
        return f"the archive declares {total} bytes, more than {MAX_ARCHIVE_BYTES >> 30} GiB"
    return None


def _check_model(entry: str, raw: bytes) -> str | None:
    """The program's JSON: expressions, guards, operators (``pt2_json.check_model_json``)."""
    try:
        model = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return f"{entry} is not valid JSON ({type(exc).__name__})"
    return pt2_json.check_model_json(model, entry)


def _check_payload_config(entry: str, raw: bytes, record_bytes: dict[str, int]) -> str | None:
    """Every weight and constant must be a raw tensor, never a pickle, and declare a size that
    fits the budget and its record."""
    try:
        config = json.loads(raw)["config"]
        items = list(config.items())
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        return f"{entry} is not a valid payload config"
    folder = entry.rsplit("/", 1)[0] + "/"
    pattern = _PAYLOAD_NAMES[folder]
    for fqn, meta in items:
        if not isinstance(meta, dict):
            return f"{entry} is not a valid payload config"
        if meta.get("use_pickle") or not pattern.fullmatch(str(meta.get("path_name"))):
            return f"'{fqn}' is a pickled object, not a plain tensor"
    records = {name.rsplit("/", 1)[1]: size for name, size in record_bytes.items() if name.startswith(folder)}
    return pt2_json.check_payload_sizes(config, entry, records)


def _check_sample_inputs(entry: str, raw: bytes) -> str | None:
    """torch.export.load retries a failing weights-only load unsafely; fail here instead."""
    if not raw:
        return None
    try:
        torch.load(io.BytesIO(raw), weights_only=True)
    except Exception:  # any failure means torch would fall back to a full unpickle
        return f"{entry} holds objects other than plain tensors"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
