"""Check a NIR file (HDF5) as data before ``nir.read`` reads it: no bytes from elsewhere, real
numbers only, a non-empty connected graph, sizes within a memory budget.

HDF5 can make a dataset's bytes come from outside the file: external storage (raw bytes of any
other file), external links (a dataset of another HDF5 file), soft links (another path, here or in
a linked file) and virtual datasets (mappings onto other files). ``nir.read`` follows all of them,
so a crafted NIR file could copy a local file's bytes into the compiled outputs. Compressed
chunks let a 50 kB file declare gigabytes, and a hard link back to a parent group makes
``nir.read``'s recursion endless. So before any dataset is read, :func:`check_file` walks the
file's links and datasets (headers only) and refuses, in one line naming the entry:

- any link other than a plain hard link, any object reached twice, nesting deeper than 64;
- a dataset with external storage or a virtual layout;
- a dtype other than a real number (int, uint, float, bool), except strings where NIR writes
  them (``type``, ``version``, ``edges`` and ``metadata/...``), scalars or edge pairs, short;
- more than ``MAX_BYTES`` declared in all, or ``MAX_OBJECTS`` objects;
- a graph without nodes or without edges, an edge naming a node that does not exist;
- a ``dt`` in metadata that is not a finite number > 0; a ``reset`` that is not words.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from snncompile.errors import ModelLoadError

MAX_BYTES = 512 << 20  # all numeric datasets together, as declared (a Loihi 2 chip holds 120 M synapses)
MAX_OBJECTS = 100_000
MAX_DEPTH = 64
MAX_STRING = 4_096  # characters in one string
MAX_EDGES = 1_000_000
RESET_WORDS = re.compile(r"[A-Za-z_]{1,32}(,[A-Za-z_]{1,32}){0,16}")  # ours: 'subtract,zero' when mixed
STRING_NAMES = frozenset({"type", "version", "edges"})


class NirFileError(ModelLoadError):
    """A NIR file that is not plain data, or too large; the message names the entry."""


def check_file(path: str | Path) -> None:
    """Raise NirFileError when the HDF5 file at ``path`` is not a plain NIR file (see the module
    docstring); return quietly when it is one. Reads headers and strings, never a weight."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            _Walk(path).run(f)
    except NirFileError:
        raise
    except Exception as exc:  # h5py raises OSError, KeyError, ValueError... on damaged files
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else "no message"
        raise NirFileError(f"{path}: not a readable NIR file ({type(exc).__name__}: {text[:200]}); "
                           "write it with nir.write") from None


class _Walk:
    def __init__(self, path: Path):
        self.path = path
        self.seen: set = set()
        self.bytes = 0

    def refuse(self, where: str, why: str):
        raise NirFileError(f"{self.path}: {where or '/'}: {why}; a NIR file must be plain data (write it with nir.write)")

    def run(self, f) -> None:
        import h5py

        if "node" not in f or not isinstance(f.get("node", getlink=True), h5py.HardLink):
            self.refuse("/node", "missing, or not a plain group")
        self.group(f, "", 0)
        self.graph(f["node"], "/node")

    def group(self, group, where: str, depth: int) -> None:
        import h5py

        if depth > MAX_DEPTH:
            self.refuse(where, f"nested deeper than {MAX_DEPTH}")
        for name in group:
            here = f"{where}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                self.refuse(here, f"an external link to {link.filename}")
            if isinstance(link, h5py.SoftLink):
                self.refuse(here, f"a soft link to {link.path}")
            if not isinstance(link, h5py.HardLink):
                self.refuse(here, f"a link of type {type(link).__name__}")
            item = group[name]
            key = _address(item)
            if key in self.seen:
                self.refuse(here, "an object linked twice (a loop or an alias)")
            self.seen.add(key)
            if len(self.seen) > MAX_OBJECTS:
                self.refuse(here, f"more than {MAX_OBJECTS} objects")
            if isinstance(item, h5py.Group):
                self.group(item, here, depth + 1)
            elif isinstance(item, h5py.Dataset):
                self.dataset(item, here, name, "/metadata" in where)
            else:
                self.refuse(here, f"a {type(item).__name__}, not a group or a dataset")

    def dataset(self, ds, where: str, name: str, in_metadata: bool) -> None:
        import h5py

        if ds.is_virtual:
            self.refuse(where, "a virtual dataset (its data lives in other files)")
        if ds.id.get_create_plist().get_external_count() > 0:
            self.refuse(where, "a dataset with external storage (its bytes live in another file)")
        dtype = ds.dtype
        if h5py.check_string_dtype(dtype) is not None or dtype.kind in "SU":
            self.string(ds, where, name, in_metadata)
            return
        if h5py.check_ref_dtype(dtype) is not None or h5py.check_vlen_dtype(dtype) is not None:
            self.refuse(where, "a dataset of references or variable-length arrays")
        if dtype.kind not in "iufb" or dtype.names is not None or dtype.subdtype is not None:
            what = {"c": "complex numbers", "V": "a compound or opaque type", "O": "objects"}.get(dtype.kind, str(dtype))
            self.refuse(where, f"holds {what}; NIR parameters are real numbers")
        size = int(np.prod(ds.shape, dtype=object)) if ds.shape is not None else 0
        self.bytes += size * dtype.itemsize
        if self.bytes > MAX_BYTES:
            self.refuse(where, f"the datasets declare more than {MAX_BYTES >> 20} MiB")
        if in_metadata and name == "dt":
            self.dt(ds, where)
        if in_metadata and name == "reset":
            self.refuse(where, "a reset must be a word such as 'zero' or 'subtract', not a number")

    def string(self, ds, where: str, name: str, in_metadata: bool) -> None:
        if name not in STRING_NAMES and not in_metadata:
            self.refuse(where, "holds text where NIR writes numbers")
        shape = ds.shape or ()
        if name == "edges":
            if len(shape) != 2 or shape[1] != 2 or shape[0] > MAX_EDGES:
                self.refuse(where, "edges must be pairs of node names")
        elif shape != ():
            self.refuse(where, f"an array of text (shape {shape}) where NIR writes one word")
        values = ds[()]
        for value in np.ravel(np.asarray(values, dtype=object)):
            text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
            if len(text) > MAX_STRING:
                self.refuse(where, f"a string of {len(text)} characters")
            if in_metadata and name == "reset" and not RESET_WORDS.fullmatch(text):
                self.refuse(where, f"reset '{text[:40]}' is not a word such as 'zero' or 'subtract'")

    def dt(self, ds, where: str) -> None:
        if ds.shape != ():
            self.refuse(where, f"dt must be one number, not an array of shape {ds.shape}")
        value = float(ds[()])
        if not (math.isfinite(value) and value > 0):
            self.refuse(where, f"dt must be a finite number > 0, got {value!r}")

    def graph(self, node, where: str) -> None:
        """The top graph (and every subgraph): nodes, and edges between nodes that exist."""
        import h5py

        if "nodes" not in node or not isinstance(node["nodes"], h5py.Group):
            self.refuse(where, "a graph without nodes")
        nodes = node["nodes"]
        if len(nodes) == 0:
            self.refuse(f"{where}/nodes", "an empty graph")
        if "edges" not in node or not isinstance(node["edges"], h5py.Dataset):
            self.refuse(where, "a graph without edges")
        edges = node["edges"]
        if edges.shape is None or len(edges.shape) != 2 or edges.shape[0] == 0:
            if len(nodes) > 1:
                self.refuse(f"{where}/edges", "a graph of several nodes without edges")
            return
        names = set(nodes)
        for pair in np.asarray(edges[()], dtype=object):
            for end in pair:
                text = end.decode("utf-8", "replace") if isinstance(end, bytes) else str(end)
                if text.split(".", 1)[0] not in names:
                    self.refuse(f"{where}/edges", f"an edge names '{text[:40]}', not a node of the graph")
        for name in nodes:
            child = nodes[name]
            if isinstance(child, h5py.Group) and "nodes" in child and "edges" in child:
                self.graph(child, f"{where}/nodes/{name}")


def _address(item) -> tuple:
    import h5py

    info = h5py.h5o.get_info(item.id)
    token = getattr(info, "token", None)
    return (item.file.id.fileno, token if token is not None else info.addr)
