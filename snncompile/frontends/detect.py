"""Model loading by content, not by file name: sniff the format, then call its frontend.

Formats, from the file's first bytes and (for zip archives) its member names:

    torch.export archive   zip, ``<top>/archive_format`` = pt2 and ``<top>/models/``   (recommended)
    TorchScript archive    zip with ``<top>/code/`` and ``<top>/constants.pkl``         torch.jit.save
    torch.save file        zip with ``<top>/data.pkl``, or a legacy pickle (\\x80 ...)  torch.save
    NIR                    HDF5 signature ``\\x89HDF\\r\\n\\x1a\\n``                        nir.write
    netx                   HDF5 with a ``/layer`` group and no ``/node``  lava-dl export_hdf5, --target netx
    ONNX                   a protobuf ModelProto that parses and holds a graph         onnx.save
    .npz                   zip of ``.npy`` members: data, never a model (a clear refusal)

A torch.save file is either a state_dict (it loads with ``torch.load(weights_only=True)``),
which needs ``arch`` to say what module it fills, or a pickled object (a whole nn.Module, or
anything else): that load fails, and unpickling it for real can execute arbitrary code, so it
is refused unless ``trust_code`` is set. A TorchScript archive holds code that runs when it is
loaded: it needs ``trust_code`` too. The suffix is never trusted: a ``.onnx`` holding a
pickle is still a pickle.
"""

from __future__ import annotations

import enum
import importlib
import io
import zipfile
from pathlib import Path

from snncompile.errors import ModelLoadError
from snncompile.frontends.options import LoadOptions

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
# The first field tags a ModelProto can start with (ir_version 1, producer 2, ... graph 7,
# opset_import 8, metadata_props 14, training_info 20, functions 25), wire types 0 or 2.
_ONNX_FIRST_BYTES = frozenset({0x08, 0x12, 0x1A, 0x22, 0x2A, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA})

ACCEPTED = (
    "a torch.export archive (torch.export.save, recommended), a TorchScript archive "
    "(torch.jit.save), a torch.save state_dict with --arch module:factory, an ONNX model or a NIR file"
)


class Format(enum.Enum):
    TORCH_EXPORT = "torch.export archive"
    TORCHSCRIPT = "TorchScript archive"
    TORCH_SAVE = "torch.save file"
    ONNX = "ONNX model"
    NIR = "NIR file"
    NETX = "lava-dl netx file"
    NPZ = "numpy .npz archive"


def sniff(path: str | Path) -> Format:
    """The format of the file at ``path``; ModelLoadError when it is none of the accepted ones."""
    path = Path(path)
    head = _read_head(path, 16)
    if head.startswith(HDF5_MAGIC):
        from snncompile.frontends.netx import is_netx

        return Format.NETX if is_netx(path) else Format.NIR
    if head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC)):
        return _sniff_zip(path)
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return Format.TORCH_SAVE  # a pickle: torch.save's legacy format or pickle.dump
    if head and head[0] in _ONNX_FIRST_BYTES:
        # a damaged .onnx goes to the ONNX loader, whose error says what is wrong with it
        if path.suffix.lower() == ".onnx" or _parses_as_onnx(path):
            return Format.ONNX
    kind = "an empty file" if not head else "an unrecognised format"
    raise ModelLoadError(f"{path}: {kind}; expected {ACCEPTED}")


def load(path: str | Path, options: LoadOptions = LoadOptions()):
    """The float IR graph of the model file at ``path``, whatever its name."""
    path = Path(path)
    fmt = sniff(path)
    if fmt is Format.TORCH_EXPORT:
        return importlib.import_module("snncompile.frontends.torch").load_model(path)
    if fmt is Format.ONNX:
        return importlib.import_module("snncompile.frontends.onnx").load_model(path)
    if fmt is Format.NIR:
        return importlib.import_module("snncompile.frontends.nir").load_model(path, dt=options.nir_dt,
                                                                              reset=options.nir_reset)
    if fmt is Format.NETX:
        return importlib.import_module("snncompile.frontends.netx").load_model(path)
    if fmt is Format.NPZ:
        raise ModelLoadError(f"{path}: a numpy .npz archive holds data, not a model; pass it as "
                             f"--data, and as the model {ACCEPTED}")
    from snncompile.frontends import torch_files

    if fmt is Format.TORCHSCRIPT:
        return torch_files.load_torchscript(path, options)
    return torch_files.load_torch_save(path, options)


def _read_head(path: Path, size: int) -> bytes:
    if not path.exists():
        raise ModelLoadError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a regular file; pass a model file")
    try:
        with path.open("rb") as f:
            return f.read(size)
    except OSError as exc:
        raise ModelLoadError(f"{path}: cannot read the file ({exc.strerror or exc})") from None


def _sniff_zip(path: Path) -> Format:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise ModelLoadError(f"{path}: a damaged zip archive ({type(exc).__name__}: {_first_line(exc)}); "
                             f"expected {ACCEPTED}") from None
    if names and all(n.endswith(".npy") for n in names):
        return Format.NPZ
    entries = {n.split("/", 1)[1] for n in names if "/" in n}
    if "archive_format" in entries or any(e.startswith("models/") for e in entries):
        return Format.TORCH_EXPORT
    if any(e.startswith("code/") for e in entries) or "constants.pkl" in entries:
        return Format.TORCHSCRIPT
    if "data.pkl" in entries:
        return Format.TORCH_SAVE
    raise ModelLoadError(f"{path}: a zip archive of no known model format; expected {ACCEPTED}")


def _parses_as_onnx(path: Path) -> bool:
    import onnx

    try:
        model = onnx.load_model_from_string(path.read_bytes())
    except Exception:  # protobuf raises DecodeError, RuntimeWarning-as-error and others
        return False
    return model.HasField("graph") and model.ir_version > 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
