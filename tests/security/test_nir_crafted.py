"""Crafted NIR (HDF5) files: links and storage that pull bytes from other files, types NIR does
not write, empty graphs, bad dt and bombs are refused before nir.read (frontends/nir_file.py):
exit 2, one line naming the entry, no output, no byte of the secret file anywhere."""

from __future__ import annotations

import subprocess
import sys

import h5py
import nir
import numpy as np
import pytest

from snncompile.frontends.nir_file import NirFileError, check_file
from tests.security.helpers import ROOT, assert_refused, run_cli

SECRET = b"TOP-SECRET-0123456789abcdef-" * 4  # 112 bytes = 14 float64 values


def _graph(metadata=None) -> nir.NIRGraph:
    rng = np.random.default_rng(1)
    nodes = {
        "input": nir.Input(input_type={"input": np.array([64])}),
        "fc1": nir.Affine(weight=rng.normal(0, 0.1, (16, 64)), bias=np.zeros(16)),
        "if1": nir.IF(r=np.ones(16), v_threshold=np.ones(16), v_reset=np.zeros(16)),
        "fc2": nir.Affine(weight=rng.normal(0, 0.1, (10, 16)), bias=np.zeros(10)),
        "out": nir.I(r=np.ones(10)),
        "output": nir.Output(output_type={"output": np.array([10])}),
    }
    edges = [("input", "fc1"), ("fc1", "if1"), ("if1", "fc2"), ("fc2", "out"), ("out", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata or {"dt": 1.0}, type_check=False)


@pytest.fixture
def base(tmp_path):
    path = tmp_path / "model.nir"
    nir.write(path, _graph())
    return path


@pytest.fixture
def secret(tmp_path):
    path = tmp_path / "secret.bin"
    path.write_bytes(SECRET)
    return path


def _replace(path, name, **create):
    with h5py.File(path, "r+") as f:
        del f[name]
        f.create_dataset(name, **create)


def _link(path, name, link):
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = link


BIAS = "node/nodes/fc2/bias"  # 10 float64 values


def craft_external_storage(path, secret, tmp):
    _replace(path, BIAS, shape=(10,), dtype="<f8", external=[(str(secret), 0, 80)])


def craft_external_link(path, secret, tmp):
    other = tmp / "other.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.frombuffer(SECRET[:80], "<f8")
    _link(path, BIAS, h5py.ExternalLink(str(other), "/data"))


def craft_soft_link(path, secret, tmp):
    _link(path, BIAS, h5py.SoftLink("/node/nodes/out/r"))


def craft_virtual(path, secret, tmp):
    other = tmp / "virtual_source.h5"
    with h5py.File(other, "w") as f:
        f["data"] = np.frombuffer(SECRET[:80], "<f8")
    layout = h5py.VirtualLayout(shape=(10,), dtype="<f8")
    layout[:] = h5py.VirtualSource(str(other), "data", shape=(10,))
    with h5py.File(path, "r+") as f:
        del f[BIAS]
        f.create_virtual_dataset(BIAS, layout)


def craft_hard_link_loop(path, secret, tmp):
    with h5py.File(path, "r+") as f:
        f["node/nodes/fc2/loop"] = f["node/nodes"]


def craft_vlen_string_weight(path, secret, tmp):
    _replace(path, "node/nodes/fc2/weight", data=np.array(["1"] * 160, dtype=object).reshape(10, 16),
             dtype=h5py.string_dtype())


def craft_compound_threshold(path, secret, tmp):
    _replace(path, "node/nodes/if1/v_threshold", data=np.zeros(16, dtype=[("a", "<f8"), ("b", "<i4")]))


def craft_complex_weight(path, secret, tmp):
    _replace(path, "node/nodes/fc2/weight", data=np.ones((10, 16)) * (1 + 2j))


def craft_no_edges(path, secret, tmp):
    _replace(path, "node/edges", shape=(0, 2), dtype=h5py.string_dtype())


def craft_no_nodes(path, secret, tmp):
    with h5py.File(path, "r+") as f:
        for name in list(f["node/nodes"]):
            del f["node/nodes"][name]


def craft_edge_to_nowhere(path, secret, tmp):
    _replace(path, "node/edges", data=np.array([["input", "fc1"], ["fc1", "ghost"]], dtype=object),
             dtype=h5py.string_dtype())


def craft_array_reset(path, secret, tmp):
    with h5py.File(path, "r+") as f:
        f["node/metadata/reset"] = np.zeros(16)


def craft_dt_zero(path, secret, tmp):
    _replace(path, "node/metadata/dt", data=0.0)


def craft_dt_negative(path, secret, tmp):
    _replace(path, "node/metadata/dt", data=-1e-3)


def craft_dt_nan(path, secret, tmp):
    _replace(path, "node/metadata/dt", data=np.nan)


CASES = {
    craft_external_storage: "external storage",
    craft_external_link: "an external link",
    craft_soft_link: "a soft link",
    craft_virtual: "a virtual dataset",
    craft_hard_link_loop: "linked twice",
    craft_vlen_string_weight: "text where NIR writes numbers",
    craft_compound_threshold: "compound",
    craft_complex_weight: "complex numbers",
    craft_no_edges: "without edges",
    craft_no_nodes: "an empty graph",
    craft_edge_to_nowhere: "'ghost'",
    craft_array_reset: "reset",
    craft_dt_zero: "dt must be a finite number > 0",
    craft_dt_negative: "dt must be a finite number > 0",
    craft_dt_nan: "dt must be a finite number > 0",
}


@pytest.mark.parametrize("craft", list(CASES), ids=lambda c: c.__name__[6:])
def test_crafted_nir_is_refused_in_one_line(craft, base, secret, tmp_path):
    craft(base, secret, tmp_path)
    out = tmp_path / "out"
    code, _, err = run_cli([base, "--target", "nir", "--steps", "2", "--calib-samples", "4", "-o", out])
    assert_refused(code, err, None, CASES[craft])
    assert not out.exists()


@pytest.mark.parametrize("craft", [craft_external_storage, craft_external_link, craft_virtual],
                         ids=["external_storage", "external_link", "virtual"])
def test_without_the_check_the_secret_reaches_the_weights(craft, base, secret, tmp_path):
    """The control: nir.read follows each trick, and the secret's bytes become biases."""
    craft(base, secret, tmp_path)
    graph = nir.read(base, type_check=False)
    assert np.asarray(graph.nodes["fc2"].bias).tobytes() == SECRET[:80]
    with pytest.raises(NirFileError):
        check_file(base)


def test_compressed_bomb_is_refused_fast_and_small(tmp_path):
    """50 kB on disk declaring 8 GB (gzip chunks of one fill value): refused from the headers."""
    path = tmp_path / "bomb.nir"
    nir.write(path, _graph())
    with h5py.File(path, "r+") as f:
        del f["node/nodes/fc1/weight"]
        f.create_dataset("node/nodes/fc1/weight", shape=(16, 64 * 1_000_000), dtype="<f8",
                         chunks=(16, 65536), compression="gzip", fillvalue=1.0)
    assert path.stat().st_size < 100_000
    script = ("import resource, sys, time\nfrom snncompile.cli import main\nt0 = time.perf_counter()\n"
              f"code = main([{str(path)!r}, '--target', 'nir', '-o', {str(tmp_path / 'out')!r}])\n"
              # the process's own VmHWM: ru_maxrss keeps the forking parent's mark across exec
              "hwm = next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
              "print(code, time.perf_counter() - t0, hwm)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    code, seconds, peak_kb = proc.stdout.split()
    assert_refused(int(code), proc.stderr, None, "MiB")
    assert float(seconds) < 10 and int(peak_kb) < 1 << 20, (seconds, peak_kb)


def test_plain_nir_files_pass(base):
    check_file(base)
    code, _, err = run_cli(["inspect", base, "--calib-samples", "4"])
    assert code == 0, err
