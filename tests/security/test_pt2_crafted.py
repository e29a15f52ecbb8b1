"""Crafted torch.export archives: torch.export.load evaluates the JSON's symbolic expressions with
sympy (``eval``) and ``exec``s its guard code; neither may run without the check in
``frontends/pt2_json.py`` refusing the file first (exit 2, one line, no marker file)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from tests.security.helpers import MLP, ROOT, assert_refused, rewrite_pt2, run_cli, run_process


def touch(marker) -> str:
    return f"__import__('os').system('touch {marker}')"


def _first_tensor(model):
    values = model["graph_module"]["graph"]["tensor_values"]
    return values[next(iter(values))]


def at_size(payload):
    def edit(model):
        _first_tensor(model)["sizes"][0] = {"as_expr": {"expr_str": payload, "hint": None}}
        return model
    return edit


def at_stride(payload):
    def edit(model):
        _first_tensor(model)["strides"][0] = {"as_expr": {"expr_str": payload, "hint": None}}
        return model
    return edit


def at_sym_int(payload):
    def edit(model):
        model["graph_module"]["graph"]["sym_int_values"]["evil"] = {"as_expr": {"expr_str": payload}}
        return model
    return edit


def at_sym_bool(payload):
    def edit(model):
        model["graph_module"]["graph"]["sym_bool_values"]["evil"] = {"as_expr": {"expr_str": payload}}
        return model
    return edit


def at_guard(payload):
    def edit(model):
        model["guards_code"] = [payload]
        return model
    return edit


def at_target(target):
    def edit(model):
        model["graph_module"]["graph"]["nodes"][0]["target"] = target
        return model
    return edit


def at_range(name):
    def edit(model):
        model["range_constraints"] = {name: {"min_val": 2, "max_val": None}}
        return model
    return edit


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pt2")
    counter = iter(range(10**6))

    def make(edit_factory, template: str):
        """A crafted copy of the digits MLP; ``template`` has {touch} for the code to run."""
        i = next(counter)
        marker = tmp / f"MARKER{i}"
        payload = template.format(touch=touch(marker), marker=marker)
        return rewrite_pt2(MLP, tmp / f"crafted{i}.pt2", edit_model=edit_factory(payload)), marker
    return make


PAYLOADS = [
    "({touch} * 0 + 32)",
    "Integer({touch} * 0 + 32)",
    "Mul(Integer(2), Symbol('s0', integer={touch} == 0))",
    "Max(Integer(1), Symbol('s0'.__class__.__name__))",
    "Symbol('s0').__class__.__init__.__globals__",
    "Max('({touch} * 0 + 1)', Integer(2))",  # a string sympy would sympify again
    "Float('{touch}')",
    "(lambda: {touch})()",
    "[{touch} for _ in (1,)][0]",
    "getattr(Integer(1), '__class__')",
    "Integer(1) if {touch} else Integer(2)",
    "Symbol('s0', **{{'integer': {touch}}})",
    "eval(\"{touch}\")",
]


@pytest.mark.parametrize("where", [at_size, at_stride, at_sym_int, at_sym_bool])
def test_expression_payloads_at_every_kind_of_entry_are_refused(crafted, where):
    path, marker = crafted(where, PAYLOADS[0])
    code, _, err = run_cli(["inspect", path])
    assert_refused(code, err, marker, "is not allowed")
    assert "expr_str" in err


@pytest.mark.parametrize("template", PAYLOADS[1:])
def test_expression_payload_variants_are_refused(crafted, template):
    path, marker = crafted(at_size, template)
    code, _, err = run_cli(["inspect", path])
    assert_refused(code, err, marker, "models/model.json")


@pytest.mark.parametrize("template", [
    "{touch}",
    "L['x'].size()[0] > ({touch} * 0)",
    "L['x\"); {touch}; (\"'].size()[0] > 3",  # a key torch pastes into a string literal of its code
    "L['x'].__class__",
    "L['x'].size.__self__",
])
def test_guard_code_payloads_are_refused(crafted, template):
    path, marker = crafted(at_guard, template)
    code, _, err = run_cli(["inspect", path])
    assert_refused(code, err, marker, "guards_code[0] is not a shape guard")


@pytest.mark.parametrize("target", ["torch.ops.aten.from_file.default", "torch.ops.aten.save.default",
                                    "builtins.eval", "torch.load", "#evil:ops", "torch.ops.higher_order.x"])
def test_node_targets_outside_the_operator_namespaces_are_refused(crafted, target):
    path, _ = crafted(lambda _p: at_target(target), "")
    code, _, err = run_cli(["inspect", path])
    assert_refused(code, err, None, "target is not allowed")


def test_range_constraint_names_must_be_symbols(crafted, tmp_path):
    path, marker = crafted(lambda p: at_range(p), "s0'); {touch}; ('")
    code, _, err = run_cli(["inspect", path])
    assert_refused(code, err, marker, "range_constraints")


def test_the_primary_payload_really_runs_code_in_plain_torch(crafted):
    """The control: the same crafted file, handed to torch.export.load without our check, runs
    its code (so the tests above test something)."""
    path, marker = crafted(at_size, PAYLOADS[0])
    subprocess.run([sys.executable, "-c", f"import torch\ntry:\n torch.export.load({str(path)!r})\n"
                    "except Exception:\n pass"], cwd=ROOT, capture_output=True, timeout=300)
    assert marker.exists()


def test_sympy_power_bomb_is_refused_fast(crafted):
    path, _ = crafted(at_size, "Pow(Integer(10), Integer(10**9))")
    t0 = time.perf_counter()
    code, _, err = run_cli(["inspect", path])
    assert_refused(code, err, None, "exponent")
    assert time.perf_counter() - t0 < 10


def test_declared_size_of_an_empty_weight_record_is_refused(tmp_path):
    """torch fills an empty record with torch.zeros(declared sizes): 1 MB can claim 4 TB."""
    def huge(config):
        name = next(iter(config["config"]))
        config["config"][name]["tensor_meta"]["sizes"] = [{"as_int": 1 << 20}, {"as_int": 1 << 20}]
        return config
    path = rewrite_pt2(MLP, tmp_path / "zeros.pt2", edit_weights=huge, replace={"weights/weight_0": b""})
    code, _, err = run_cli(["inspect", path])
    assert_refused(code, err, None, "MiB")


def test_dynamic_shape_exports_still_load(tmp_path):
    """What torch writes for dynamic shapes (Symbol, Mul, Mod, FloorDiv, range constraints,
    guards) passes the check."""
    from snncompile.frontends.pt2_archive import read_exported_program

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            y = self.fc(x).relu()
            if x.shape[0] > 3:
                y = y * 2
            return torch.cat([y, y], 0).reshape(-1, 2) * (x.shape[0] % 3) + x.shape[0] // 2

    auto = torch.export.Dim.AUTO
    program = torch.export.export(Net().eval(), (torch.zeros(4, 8),), dynamic_shapes={"x": {0: auto}})
    assert program._guards_code  # the guard on x.shape[0] > 3
    torch.export.save(program, tmp_path / "dyn.pt2")
    loaded = read_exported_program(tmp_path / "dyn.pt2")
    assert loaded.range_constraints


def test_a_crafted_file_in_a_real_process_is_one_line(crafted):
    path, marker = crafted(at_size, PAYLOADS[0])
    for command in (["inspect", path], [path, "--target", "nir", "-o", path.parent / "out", "--json"]):
        proc = run_process(command)
        assert_refused(proc.returncode, proc.stderr, marker, "is not allowed")
    assert '"exit_code": 2' in proc.stdout
    assert not (path.parent / "out").exists()
