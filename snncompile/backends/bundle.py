"""The run bundle: a fixed-point graph and its encoded test inputs as plain files, no pickle.

``network.json`` holds the topology, ``network.npz`` every array; together they rebuild the same
IR ``Graph`` (``load``), which is what ``snncompile verify`` replays on the reference simulator,
and what the standalone ``run_on_loihi.py`` (``snncompile/backends/run_on_loihi.py``) rebuilds
as Lava processes with only numpy and lava-nc importable.

network.json (``format`` = "snncompile-bundle", ``version`` = 1)::

    steps        time steps the model was compiled for (the script's default)
    samples      how many encoded samples network.npz holds
    nodes        [{"name", "op" (OpKind value), "inputs" [names, port order], "shape",
                   "params" {field: value}}] in topological order; a value is a JSON scalar,
                   a list (a tuple), null, {"array": npz key}, {"IntFormat": {...}} or
                   {"MantExpFormat": {...}}
    encoders     [{"name", "mant": npz key, "exp": npz key}]: per BiasEncoder the host-computed
                 input (snncompile.sim.ann.encode_inputs), arrays (samples, *neuron shape)
    metadata     the graph's metadata (JSON-able parts)

network.npz: ``node/<index>/<field>`` per array parameter (index into ``nodes``),
``input/<index>/mant`` and ``input/<index>/exp`` (int64) per encoder, ``input/x`` (the raw
samples, float64) and ``input/sample_ids`` (int64: indices into the test split).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from snncompile.errors import SnnCompileError
from snncompile.ir import ops as ir_ops
from snncompile.ir.fixed_point import IntFormat, MantExpFormat
from snncompile.ir.graph import Graph, GraphBuilder

FORMAT = "snncompile-bundle"
VERSION = 1
JSON_NAME = "network.json"
NPZ_NAME = "network.npz"

OP_CLASSES = {
    cls.kind.value: cls
    for cls in (
        ir_ops.Input, ir_ops.Output, ir_ops.Dense, ir_ops.Conv2d, ir_ops.BatchNorm, ir_ops.ReLU,
        ir_ops.AvgPool2d, ir_ops.SumPool2d, ir_ops.Flatten, ir_ops.Add, ir_ops.IF, ir_ops.LIF,
        ir_ops.Integrator, ir_ops.FixedDense, ir_ops.FixedConv2d, ir_ops.BiasEncoder,
        ir_ops.LoihiNeuron,
    )
}
FORMATS = {"IntFormat": IntFormat, "MantExpFormat": MantExpFormat}


class BundleError(SnnCompileError):
    """A run bundle (network.json / network.npz) is missing or malformed."""


@dataclass
class Bundle:
    """What a bundle holds: the fixed-point graph and the encoded samples it was written with."""

    graph: Graph
    steps: int
    x: np.ndarray  # (samples, *input shape), float64
    sample_ids: np.ndarray  # (samples,) int64
    encoded: dict[str, tuple[np.ndarray, np.ndarray, int]]  # as encode_inputs returns it

    def select(self, count: int | None) -> Bundle:
        """The first ``count`` samples (all when None)."""
        n = len(self.sample_ids) if count is None else count
        encoded = {k: (m[:n], e[:n], 0) for k, (m, e, _) in self.encoded.items()}
        return Bundle(self.graph, self.steps, self.x[:n], self.sample_ids[:n], encoded)


# ---------------------------------------------------------------------------------------------
# Writing.


def _plain(value):
    """JSON-able copy of metadata: numpy scalars and arrays become numbers and lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def _encode_value(value, key: str, arrays: dict[str, np.ndarray]):
    if isinstance(value, np.ndarray):
        arrays[key] = np.ascontiguousarray(value)
        return {"array": key}
    for tag, cls in FORMATS.items():
        if isinstance(value, cls):
            return {tag: {f.name: getattr(value, f.name) for f in fields(cls)}}
    if isinstance(value, ir_ops.Reset):
        return value.value
    if isinstance(value, tuple):
        return [_encode_value(v, f"{key}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise BundleError(f"{key}: cannot store a {type(value).__name__} in a run bundle")


def write(graph: Graph, outdir: str | Path, *, steps: int, x: np.ndarray,
          sample_ids: np.ndarray | None = None) -> dict[str, Path]:
    """Write ``graph`` and the host encoding of samples ``x`` into ``outdir``; returns the paths
    keyed "bundle_json" and "bundle_npz"."""
    from snncompile.sim.ann import encode_inputs

    outdir = Path(outdir)
    x = np.asarray(x, dtype=np.float64)
    ids = np.arange(len(x), dtype=np.int64) if sample_ids is None else np.asarray(sample_ids, dtype=np.int64)
    if ids.shape != (len(x),):
        raise BundleError(f"sample_ids has shape {ids.shape}, expected ({len(x)},)")
    arrays: dict[str, np.ndarray] = {"input/x": x, "input/sample_ids": ids}
    nodes = []
    for index, (name, op) in enumerate(graph.nodes()):
        params = {f.name: _encode_value(getattr(op, f.name), f"node/{index}/{f.name}", arrays)
                  for f in fields(op)}
        nodes.append({"name": name, "op": op.kind.value, "inputs": graph.inputs(name),
                      "shape": list(graph.shape(name)), "params": params})
    encoders = []
    for index, (name, (mant, exp, _)) in enumerate(encode_inputs(graph, x).items()):
        arrays[f"input/{index}/mant"] = np.asarray(mant, dtype=np.int64)
        arrays[f"input/{index}/exp"] = np.asarray(exp, dtype=np.int64)
        encoders.append({"name": name, "mant": f"input/{index}/mant", "exp": f"input/{index}/exp"})
    doc = {"format": FORMAT, "version": VERSION, "steps": int(steps), "samples": len(x),
           "nodes": nodes, "encoders": encoders, "metadata": _plain(graph.metadata)}
    json_path, npz_path = outdir / JSON_NAME, outdir / NPZ_NAME
    json_path.write_text(json.dumps(doc, indent=1) + "\n")
    np.savez_compressed(npz_path, **arrays)
    return {"bundle_json": json_path, "bundle_npz": npz_path}


SCRIPT_NAME = "run_on_loihi.py"
# the runner's exact vectorized convolution for Lava's CPU models (snncompile/backends/lava/fastconv.py,
# numpy and lava-nc only), which it installs under Loihi2SimCfg
HELPER_NAME = "lava_fastconv.py"


def write_script(outdir: str | Path) -> Path:
    """Copy the standalone runner (``snncompile/backends/run_on_loihi.py``, which imports only
    numpy and lava-nc) into ``outdir``, executable, with its helper ``HELPER_NAME`` beside it."""
    here = Path(__file__).parent
    (Path(outdir) / HELPER_NAME).write_text((here / "lava" / "fastconv.py").read_text())
    source = (here / SCRIPT_NAME).read_text()
    path = Path(outdir) / SCRIPT_NAME
    path.write_text(source)
    path.chmod(0o755)
    return path


# ---------------------------------------------------------------------------------------------
# Reading.


def _decode_value(value, arrays, where: str):
    if isinstance(value, list):
        return tuple(_decode_value(v, arrays, where) for v in value)
    if isinstance(value, dict):
        if set(value) == {"array"}:
            key = value["array"]
            if key not in arrays:
                raise BundleError(f"{where}: array '{key}' is missing from {NPZ_NAME}; rewrite the bundle")
            return arrays[key]
        if len(value) == 1 and next(iter(value)) in FORMATS:
            (tag, args), = value.items()
            return FORMATS[tag](**args)
        raise BundleError(f"{where}: unknown value {value!r}; rewrite the bundle")
    return value


def read_json(outdir: Path) -> dict:
    path = Path(outdir) / JSON_NAME
    if not path.is_file():
        raise BundleError(f"{path}: run bundle not found; compile with --target loihi2 or netx to write it")
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not a readable JSON file ({exc}); compile the model again") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise BundleError(f"{path}: not an snncompile run bundle (format != '{FORMAT}')")
    if doc.get("version") != VERSION:
        raise BundleError(f"{path}: bundle version {doc.get('version')!r}, this snncompile reads {VERSION}; "
                          "compile the model again")
    return doc


def read_npz(outdir: Path) -> dict[str, np.ndarray]:
    path = Path(outdir) / NPZ_NAME
    if not path.is_file():
        raise BundleError(f"{path}: run bundle arrays not found; compile the model again")
    from snncompile.data import MAX_DATA_BYTES, declared_npz_bytes
    from snncompile.errors import DataError

    try:
        declared = declared_npz_bytes(path)  # from the .npy headers: a small file can inflate to GBs
    except DataError as exc:
        raise BundleError(str(exc)) from None
    if declared > MAX_DATA_BYTES:
        raise BundleError(f"{path}: its arrays declare {declared} bytes, more than {MAX_DATA_BYTES}; "
                          "compile the model again")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{path}: unreadable ({exc}); compile the model again") from None


def load(outdir: str | Path) -> Bundle:
    """Read a bundle written by ``write`` back into the same graph and encoded samples."""
    outdir = Path(outdir)
    doc = read_json(outdir)
    arrays = read_npz(outdir)
    where = outdir / JSON_NAME
    builder = GraphBuilder(doc.get("metadata") or {})
    try:
        for node in doc["nodes"]:
            cls = OP_CLASSES.get(node["op"])
            if cls is None:
                raise BundleError(f"{where}: node '{node['name']}' has unknown op '{node['op']}'")
            params = {k: _decode_value(v, arrays, f"{where}: node '{node['name']}'")
                      for k, v in node["params"].items()}
            builder.add(node["name"], cls(**params), node["inputs"])
        graph = builder.build()
        for node in doc["nodes"]:
            if tuple(node["shape"]) != graph.shape(node["name"]):
                raise BundleError(f"{where}: node '{node['name']}' has shape {graph.shape(node['name'])}, "
                                  f"the bundle says {tuple(node['shape'])}")
        x, ids = arrays["input/x"], arrays["input/sample_ids"]
        encoded = {}
        for enc in doc["encoders"]:
            mant, exp = arrays[enc["mant"]], arrays[enc["exp"]]
            want = (len(ids), *graph.shape(enc["name"]))
            if mant.shape != want or exp.shape != want:
                raise BundleError(f"{where}: encoder '{enc['name']}' input has shape {mant.shape}, expected {want}")
            encoded[enc["name"]] = (mant, exp, 0)
        steps = int(doc["steps"])
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, SnnCompileError):
            raise
        raise BundleError(f"{where}: malformed bundle ({type(exc).__name__}: {exc}); compile the model again") from None
    if len(x) != len(ids) or math.prod(x.shape[1:]) != math.prod(graph.shape(graph.input_names()[0])):
        raise BundleError(f"{outdir / NPZ_NAME}: input/x has shape {x.shape} for {len(ids)} sample ids")
    return Bundle(graph, steps, x, ids, encoded)
