"""Torch files other than torch.export archives, each turned into an ExportedProgram and lowered by
the torch frontend: TorchScript archives and pickled modules (both only with ``trust_code``,
``--trust-code``) and state_dicts (with ``arch``).

- TorchScript (``torch.jit.save``): the archive holds code, and loading runs it: ``torch.jit.load``
  calls the archive's ``__setstate__`` methods, and the conversion below runs ``forward``;
  TorchScript's builtins include ``torch.from_file(path, True, n)``, which creates or overwrites
  any file. So it is refused unless ``trust_code`` is given (after a check of the tensor sizes,
  which reads the pickles with a scanner that builds nothing). Trusted, ``torch.jit.load`` reads
  it and torch's TorchScript-to-export converter (``TS2EPConverter``) turns the module into an
  ExportedProgram; it is exported once more with static shapes (the converter marks every
  dimension dynamic). Scripted and traced modules both work.
- state_dict: read with ``torch.load(weights_only=True)``, loaded into the module that the
  ``arch`` factory builds (every key must match, both ways), exported on an example input.
- pickled nn.Module (``torch.save(model)``): unpickling runs whatever the file says, so it is
  refused unless ``trust_code`` is given, with the safe ways to re-save it.

TorchScript and state_dict files do not record the input's shape: it comes from
``LoadOptions.input_shape``, else from the ``--data`` .npz file, else (digits, 8×8) from the
first layer: a Linear reads (in_features,), a Conv2d (in_channels, 8, 8).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import pickle
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from snncompile.errors import ModelLoadError, SnnCompileError, UnsafeModelError
from snncompile.frontends.options import LoadOptions
from snncompile.ir.graph import Graph

EXPORT_HINT = "torch.export.save(torch.export.export(model.eval(), (example,)), path)"
DIGITS_HW = (8, 8)
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


def load_torchscript(path: Path, options: LoadOptions) -> Graph:
    """A TorchScript archive (scripted or traced) as a float IR graph."""
    from snncompile.frontends.torch import from_exported

    data = _read(path)
    problem = check_storages(data)
    if problem:
        raise ModelLoadError(f"{path}: a damaged TorchScript archive ({problem}); re-save it")
    if not options.trusted:
        raise UnsafeModelError(
            f"{path}: a TorchScript archive holds code that runs when it is loaded and converted (it "
            "can create or overwrite files), so it was not loaded; re-save the eager model with "
            f"{EXPORT_HINT}, or pass --trust-code if you trust this file")
    try:
        module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    except Exception as exc:  # torch.jit raises RuntimeError, ValueError and more on damage
        raise ModelLoadError(f"{path}: torch.jit.load failed ({_reason(exc)}); re-save it with "
                             f"torch.jit.save, or better {EXPORT_HINT}") from None
    module.eval()
    example = torch.zeros((1,) + example_shape(module, options, path))
    try:
        from torch._export.converter import TS2EPConverter

        with warnings.catch_warnings(), _quiet_logger("torch"):
            warnings.simplefilter("ignore")
            program = TS2EPConverter(module, (example,)).convert()
            program = torch.export.export(program.module(), (example,))
    except Exception as exc:  # the converter raises many types for code it cannot follow
        name = getattr(module, "original_name", type(module).__name__)
        raise ModelLoadError(
            f"{path}: cannot convert TorchScript module {name} on an input of shape "
            f"{tuple(example.shape[1:])} ({_reason(exc)}); save the eager model with {EXPORT_HINT}"
        ) from None
    return from_exported(program, source=path.name)


def load_torch_save(path: Path, options: LoadOptions) -> Graph:
    """A torch.save file: a state_dict (needs ``options.arch``) or a pickled module (needs
    ``options.trust_code``)."""
    data = _read(path)
    problem = check_storages(data) if zipfile.is_zipfile(io.BytesIO(data)) else None
    if problem:
        raise ModelLoadError(f"{path}: a damaged torch.save archive ({problem}); save the model with {EXPORT_HINT}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # damaged files raise many types; unsafe ones UnpicklingError
        if not _is_weights_only_refusal(exc):
            raise ModelLoadError(f"{path}: not a readable torch.save file ({_reason(exc)}); "
                                 f"save the model with {EXPORT_HINT}") from None
        if not options.trusted:
            raise UnsafeModelError(
                f"{path}: holds pickled Python objects (e.g. a whole nn.Module saved with "
                "torch.save(model)), and unpickling can execute arbitrary code, so it was not loaded; "
                f"re-save it with {EXPORT_HINT}, or save model.state_dict() and pass --arch "
                "module:factory, or pass --trust-code if you trust this file"
            ) from None
        return _load_pickled_module(path, data, options)
    state = _state_dict(obj)
    if state is None:
        raise ModelLoadError(f"{path}: holds a {type(obj).__name__}, not a model or a state_dict; "
                             f"save the model with {EXPORT_HINT}")
    if options.arch is None:
        raise ModelLoadError(f"{path}: a state_dict holds weights only; pass --arch "
                             "package.module:factory (or path/to/file.py:factory) naming a function "
                             f"that builds the module, or save the model with {EXPORT_HINT}")
    module = build_arch(options.arch)
    fill(module, state, path, options.arch)
    return _from_module(module, path, options)


# Bytes per element of the storage classes torch's zip formats name in their pickles.
STORAGE_BYTES = {
    "DoubleStorage": 8, "FloatStorage": 4, "HalfStorage": 2, "BFloat16Storage": 2, "LongStorage": 8,
    "IntStorage": 4, "ShortStorage": 2, "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1,
    "ComplexFloatStorage": 8, "ComplexDoubleStorage": 16, "UntypedStorage": 1,
}


def check_storages(data: bytes) -> str | None:
    """Why a torch zip archive (torch.save, torch.jit.save) is damaged, or None.

    Found by fuzzing: torch.jit.load (torch 2.13) dies with a segmentation fault when a tensor's
    storage member is shorter than its pickle says, which no exception handler can catch. So
    ``<top>/data.pkl`` and ``<top>/constants.pkl`` are read first by an unpickler that resolves no global (each
    becomes an inert stub) and only records the storages it references; each must exist as
    ``<top>/<name>/<key>`` holding exactly numel × element size bytes.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            sizes = {info.filename: info.file_size for info in archive.infolist()}
            # traced_inputs.pkl is not read by torch.jit.load, and torch writes its storages empty
            pickles = [n for n in sizes if n.count("/") == 1 and n.split("/")[1] in ("data.pkl", "constants.pkl")]
            for name in pickles:
                for pid in _storages(archive.read(name)):
                    problem = _check_storage(pid, name[: -len(".pkl")], sizes)
                    if problem:
                        return problem
    except Exception as exc:  # zipfile, zlib and pickle raise many types on damaged data
        return _reason(exc)
    return None


def _check_storage(pid, folder: str, sizes: dict) -> str | None:
    if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
        return f"unexpected persistent id {str(pid)[:60]}"
    _, kind, key, _location, numel = pid
    kind = getattr(kind, "stub_name", str(kind)).rsplit(".", 1)[-1]
    if kind not in STORAGE_BYTES or not isinstance(numel, int) or numel < 0:
        return f"storage {key!s:.20} of unknown type {kind!s:.40}"
    member = f"{folder}/{key}"
    expected = numel * STORAGE_BYTES[kind]
    if sizes.get(member) != expected:
        return f"{member} holds {sizes.get(member, 'no')} bytes, its tensor needs {expected}"
    return None


class _Stub:
    """Whatever a scanned pickle builds: accepts any arguments and state, does nothing."""

    stub_name = "stub"

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


class _StorageScanner(pickle.Unpickler):
    def __init__(self, raw: bytes):
        super().__init__(io.BytesIO(raw))
        self.found: list = []

    def find_class(self, module, name):
        return type(name, (_Stub,), {"stub_name": f"{module}.{name}"})

    def persistent_load(self, pid):
        self.found.append(pid)
        return _Stub()


def _storages(raw: bytes) -> list:
    scanner = _StorageScanner(raw)
    scanner.load()
    return scanner.found


def build_arch(spec: str) -> nn.Module:
    """Call the factory ``package.module:factory`` or ``path/to/file.py:factory``."""
    where, sep, attr = spec.rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise ModelLoadError(f"--arch '{spec}': expected package.module:factory or path/to/file.py:factory")
    try:
        if where.endswith(".py") or "/" in where:
            file = Path(where)
            if not file.is_file():
                raise ModelLoadError(f"--arch '{spec}': {file} not found")
            module_spec = importlib.util.spec_from_file_location(f"snncompile_arch_{file.stem}", file)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except SnnCompileError:
        raise
    except Exception as exc:  # the user's module may raise anything while importing
        raise ModelLoadError(f"--arch '{spec}': cannot import {where} ({_reason(exc)})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"--arch '{spec}': {where} has no callable '{attr}'")
    try:
        model = factory()
    except Exception as exc:  # user code
        raise ModelLoadError(f"--arch '{spec}': {attr}() failed ({_reason(exc)})") from None
    if not isinstance(model, nn.Module):
        raise ModelLoadError(f"--arch '{spec}': {attr}() returned a {type(model).__name__}, not an nn.Module")
    return model


def fill(module: nn.Module, state: dict, path: Path, spec: str) -> None:
    """``module.load_state_dict(state)`` with every key matching; errors name the keys."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches raise even when not strict
        detail = " ".join(str(exc).split())
        raise ModelLoadError(f"{path}: does not fit --arch '{spec}' ({detail[:300]})") from None
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected[:5])}"
                         + (" ..." if len(unexpected) > 5 else ""))
        raise ModelLoadError(f"{path}: does not fit --arch '{spec}' ({'; '.join(parts)})")


def example_shape(module: nn.Module, options: LoadOptions, path: Path) -> tuple[int, ...]:
    """One sample's shape (see the module docstring for where it comes from)."""
    if options.input_shape:
        return tuple(int(d) for d in options.input_shape)
    if options.data != "digits":
        shape = _npz_sample_shape(options.data)
        if shape:
            return shape
    for _name, param in module.named_parameters():
        if param.dim() == 2:
            return (int(param.shape[1]),)
        if param.dim() == 4:
            return (int(param.shape[1]),) + DIGITS_HW
    raise ModelLoadError(f"{path}: cannot tell the model's input shape; pass --input-shape (e.g. 1,8,8)")


def _from_module(module: nn.Module, path: Path, options: LoadOptions) -> Graph:
    from snncompile.frontends.torch import from_exported

    module.eval()
    example = torch.zeros((1,) + example_shape(module, options, path))
    try:
        with warnings.catch_warnings(), _quiet_logger("torch"):
            warnings.simplefilter("ignore")
            program = torch.export.export(module, (example,))
    except Exception as exc:  # export reports untraceable code with many exception types
        raise ModelLoadError(f"{path}: torch.export.export of {type(module).__name__} on an input of "
                             f"shape {tuple(example.shape[1:])} failed ({_reason(exc)}); forward() must "
                             "be traceable by torch.export (or pass --input-shape)") from None
    return from_exported(program, source=path.name)


def _load_pickled_module(path: Path, data: bytes, options: LoadOptions) -> Graph:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as exc:  # the pickle may raise anything
        raise ModelLoadError(f"{path}: unpickling failed ({_reason(exc)}); save the model with "
                             f"{EXPORT_HINT}") from None
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{path}: the pickle holds a {type(obj).__name__}, not an nn.Module")
    return _from_module(obj, path, options)


def _state_dict(obj) -> dict | None:
    """The flat name -> tensor mapping in ``obj`` (also under a 'state_dict'-like key), or None."""
    if not isinstance(obj, dict):
        return None
    for key in STATE_DICT_KEYS:
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if obj and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        return obj
    return None


def _npz_sample_shape(spec: str) -> tuple[int, ...] | None:
    from snncompile.data import npz_shape

    shape = npz_shape(spec, "x")  # from the header: the data may be large, or a bomb
    return shape[1:] or None if shape else None


@contextlib.contextmanager
def _quiet_logger(name: str):
    """torch logs notes and tracebacks on stderr while converting; a CLI error must stay one line."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _is_weights_only_refusal(exc: BaseException) -> bool:
    return isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else "no message"
    return f"{type(exc).__name__}: {first[:200]}"


__all__ = ["load_torchscript", "load_torch_save", "build_arch", "fill", "example_shape"]
