"""Check what a torch.export archive's JSON says before torch reads it: strings torch evaluates
(symbolic expressions, guards), operators it may call, and sizes it allocates.

torch 2.13 (``torch/_export/serde/serialize.py``, ``torch/export/_unlift.py``,
``torch/export/pt2_archive/_package.py``) trusts the JSON of ``models/<name>.json``:

- every ``expr_str`` (a SymInt, SymFloat or SymBool written ``as_expr``: tensor sizes and strides,
  symbolic ints, conditions) goes through ``sympy.sympify``, which runs ``eval`` on it. torch
  writes these with ``sympy.srepr``, e.g. ``Mul(Integer(2), Symbol('s77', positive=True,
  integer=True))``; they are checked here against that grammar (:func:`check_sym_expr`): calls
  of sympy's and torch's own symbolic functions, symbol names such as ``s0``, ``u3``, integers,
  arithmetic and comparisons, nothing else;
- ``guards_code`` strings are pasted into Python source and ``exec``'d when the program's
  module is built: they must be shape guards such as ``L['x'].size()[0] > 3``
  (:func:`check_guard`);
- a node's ``target`` names the function called when the graph runs (``run_decompositions``
  retraces it): it must be an operator of the aten, prims or snncompile namespaces, or of
  ``_operator``/``math``, and never ``aten::from_file`` or ``aten::save``;
- a weight or constant whose record is empty is created as ``torch.zeros(sizes)``: the sizes it
  declares are checked against a memory budget first.

Grammars are checked on Python's own parse tree (``ast.parse`` only parses), with a bound on a
string's length, so that no check can itself run code or exhaust memory.
"""

from __future__ import annotations

import ast
import re
from typing import Iterator

MAX_EXPR_CHARS = 4_000  # longest expression torch writes for a model that fits on 1,024 chips
MAX_EXPR_TOTAL_CHARS = 4_000_000
MAX_INT = 1 << 63  # sympy integers beyond int64 are no shape
MAX_EXPONENT = 64  # Pow(2, 10**9) alone would keep sympy busy for minutes
MAX_TENSOR_BYTES = 1 << 30  # one weight or constant, as its tensor_meta declares it

SYMBOL_NAME = re.compile(r"[a-z]{1,5}\d{1,9}")  # torch's SymT prefixes (s, u, ps, zuf, idx...) + index
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d{1,4})?")
GUARD_KEY = re.compile(r"[A-Za-z_]\w{0,99}")

# Symbolic functions: sympy's (srepr names), and torch's own (serialize.py's sympy_functions).
SYMPY_CALLS = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Max", "Min", "Abs",
    "floor", "ceiling", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "Equality", "Unequality",
    "StrictLessThan", "LessThan", "StrictGreaterThan", "GreaterThan", "And", "Or", "Not",
    "Piecewise", "ExprCondPair", "IntInfinity", "NegativeIntInfinity",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt",
    "FloorToInt", "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv",
    "IntTrueDiv", "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "Identity",
})
SYMPY_NAMES = frozenset({"oo", "zoo", "nan", "true", "false", "S", "pi", "E", "int_oo"})
SYMPY_ATTRIBUTES = frozenset({"true", "false", "Zero", "One", "NegativeOne", "Half", "Infinity",
                              "NegativeInfinity"})  # S.true, S.Zero ...
ASSUMPTIONS = frozenset({
    "integer", "positive", "nonnegative", "negative", "nonpositive", "real", "finite", "zero",
    "nonzero", "rational", "even", "odd", "extended_real", "commutative", "infinite", "complex",
})
_NUMBERS = frozenset({"Integer", "Rational", "Float"})
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow", "LShift", "RShift"})
_ARITHMETIC = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_COMPARISONS = (ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE)

# Functions the graph may call: operator overloads, and Python's own arithmetic on SymInts.
TARGET = re.compile(r"torch\.ops\.(aten|prims|snncompile)\.\w+(\.\w+)?|_operator\.\w+|math\.\w+"
                    r"|torch\.sym_\w+|torch\._sym_sqrt")
DENIED_OPS = frozenset({"from_file", "save", "_nested_from_file"})  # file access by name
GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})

# torch/_export/serde/schema.py ScalarType (as written in the JSON) -> bytes per element
ELEMENT_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2,
                 28: 2, 29: 1, 30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8}


class _Refused(Exception):
    """A string outside the grammar; the message says what was found."""


def _check(text: object, grammar: type) -> str | None:
    """Why ``text`` is not an expression of ``grammar`` (an AST visitor raising _Refused), or None."""
    if not isinstance(text, str):
        return f"not a string ({type(text).__name__})"
    if len(text) > MAX_EXPR_CHARS:
        return f"{len(text)} characters, more than {MAX_EXPR_CHARS}"
    try:
        tree = ast.parse(text, mode="eval")
        grammar().visit(tree.body)
    except _Refused as exc:
        return str(exc)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        return f"not an expression ({type(exc).__name__})"
    return None


def check_sym_expr(text: object) -> str | None:
    """Why ``text`` is not a symbolic expression torch writes, or None when it is one."""
    return _check(text, _SymExpr)


class _SymExpr:
    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            self.constant(node.value)
        elif isinstance(node, ast.Name):
            if node.id not in SYMPY_NAMES and not SYMBOL_NAME.fullmatch(node.id):
                raise _Refused(f"name '{node.id[:40]}'")
        elif isinstance(node, ast.Attribute):
            if not (isinstance(node.value, ast.Name) and node.value.id == "S"
                    and node.attr in SYMPY_ATTRIBUTES):
                raise _Refused(f"attribute '.{node.attr[:40]}'")
        elif isinstance(node, ast.BinOp):
            if isinstance(node.op, ast.Pow):
                self.exponent(node.right)
            elif not isinstance(node.op, _ARITHMETIC):
                raise _Refused(f"operator {type(node.op).__name__}")
            self.visit(node.left)
            self.visit(node.right)
        elif isinstance(node, ast.UnaryOp):
            if not isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
                raise _Refused(f"operator {type(node.op).__name__}")
            self.visit(node.operand)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                self.visit(value)
        elif isinstance(node, ast.Compare):
            if not all(isinstance(op, _COMPARISONS) for op in node.ops):
                raise _Refused("a comparison other than ==, !=, <, <=, >, >=")
            for value in (node.left, *node.comparators):
                self.visit(value)
        elif isinstance(node, ast.Tuple):  # Piecewise's (expr, cond) pairs
            for value in node.elts:
                self.visit(value)
        elif isinstance(node, ast.Call):
            self.call(node)
        else:
            raise _Refused(f"a {type(node).__name__} expression")

    def call(self, node: ast.Call) -> None:
        if not isinstance(node.func, ast.Name) or node.func.id not in SYMPY_CALLS:
            what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise _Refused(f"call of '{what[:40]}'")
        name = node.func.id
        if name == "Symbol":
            if not (len(node.args) == 1 and isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str) and SYMBOL_NAME.fullmatch(node.args[0].value)):
                raise _Refused("a Symbol not named like s0 or u3")
        elif name in _NUMBERS:
            # Integer(3), Rational(1, 2), Float('1.5', precision=53): literal numbers only
            if not node.args or len(node.args) > 2:
                raise _Refused(f"{name} of {len(node.args)} arguments")
            for arg in node.args:
                if isinstance(arg, ast.UnaryOp) and isinstance(arg.op, (ast.USub, ast.UAdd)):
                    arg = arg.operand  # Integer(-1) parses as a minus applied to 1
                if not (isinstance(arg, ast.Constant) and isinstance(arg.value, (str, int, float))
                        and not isinstance(arg.value, bool)):
                    raise _Refused(f"{name} of something other than a number")
                _number(arg.value)
        else:
            if name in _POWERS and len(node.args) == 2:
                self.exponent(node.args[1])
            for arg in node.args:
                if isinstance(arg, ast.Starred):
                    raise _Refused("a starred argument")
                self.visit(arg)
        for keyword in node.keywords:
            if name == "Float" and keyword.arg in ("precision", "dps") and isinstance(
                    keyword.value, ast.Constant) and type(keyword.value.value) is int and 0 < keyword.value.value <= 1024:
                continue
            if keyword.arg not in ASSUMPTIONS or not (
                    isinstance(keyword.value, ast.Constant) and isinstance(keyword.value.value, bool)):
                raise _Refused(f"keyword '{str(keyword.arg)[:40]}'")

    def constant(self, value: object) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, int):
            if abs(value) >= MAX_INT:
                raise _Refused("an integer beyond 64 bits")
            return
        if isinstance(value, float):
            return
        raise _Refused(f"a {type(value).__name__} constant")

    def exponent(self, node: ast.AST) -> None:
        value = node.args[0] if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                                 and node.func.id == "Integer" and len(node.args) == 1) else node
        if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
            value = value.operand
        if isinstance(value, ast.Constant) and isinstance(value.value, int) and abs(value.value) <= MAX_EXPONENT:
            return
        if isinstance(value, (ast.Name, ast.Call)):
            # a symbolic exponent (torch writes these for 2**s0): its value is the symbol's hint
            self.visit(value)
            return
        raise _Refused(f"an exponent beyond {MAX_EXPONENT}")


def _number(value: object) -> None:
    """A literal number: an int within 64 bits, a float, or digits (sympy parses a str again)."""
    if isinstance(value, int) and abs(value) >= MAX_INT:
        raise _Refused("an integer beyond 64 bits")
    if isinstance(value, str) and (len(value) > 40 or not NUMBER.fullmatch(value)):
        raise _Refused(f"a number written '{value[:40]}'")


def check_guard(text: object) -> str | None:
    """Why ``text`` is not a shape guard (``L['x'].size()[0] > 3``), or None when it is one."""
    return _check(text, _Guard)


class _Guard(_SymExpr):
    """Guards are sympy printed as Python: the grammar above, plus ``L['name']...size()[i]``."""

    def visit(self, node: ast.AST) -> None:
        if isinstance(node, ast.Subscript):
            self.subscript(node)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr not in GUARD_METHODS or node.args or node.keywords:
                raise _Refused(f"call of '.{node.func.attr[:40]}'")
            self.visit(node.func.value)
        elif isinstance(node, ast.Name) and node.id == "L":
            return
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            raise _Refused("a string outside L['...']")
        else:
            super().visit(node)

    def subscript(self, node: ast.Subscript) -> None:
        key = node.slice
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            if not GUARD_KEY.fullmatch(key.value):
                raise _Refused(f"key '{key.value[:40]}'")
        elif isinstance(key, ast.Constant) and isinstance(key.value, int) and not isinstance(key.value, bool):
            if not 0 <= key.value < 1 << 20:
                raise _Refused("an index out of range")
        else:
            raise _Refused("a subscript other than a name or an index")
        self.visit(node.value)


def check_target(target: object) -> str | None:
    """Why a node's target is not an operator a plain model's graph calls, or None."""
    if not isinstance(target, str) or not TARGET.fullmatch(target):
        return f"calls '{str(target)[:60]}'"
    parts = target.split(".")
    if parts[:2] == ["torch", "ops"] and parts[3] in DENIED_OPS:
        return f"calls '{target}', which reads or writes files"
    return None


def check_model_json(model: object, entry: str) -> str | None:
    """Why the exported program ``model`` (the parsed ``models/<name>.json``) may not be given to
    torch.export.load, or None. The reason names the entry and where in it."""
    if not isinstance(model, dict):
        return f"{entry} is not a JSON object"
    total = 0
    for where, key, value, parent in _walk(model):
        if key == "expr_str":
            total += len(value) if isinstance(value, str) else 0
            problem = check_sym_expr(value)
        elif key == "target" and "inputs" in parent and "outputs" in parent:  # a graph node
            problem = check_target(value)
        else:
            continue
        if problem:
            return f"{entry}: {where}/{key} is not allowed: {problem}"
        if total > MAX_EXPR_TOTAL_CHARS:
            return f"{entry}: more than {MAX_EXPR_TOTAL_CHARS} characters of symbolic expressions"
    guards = model.get("guards_code", [])
    if not isinstance(guards, list):
        return f"{entry}: guards_code is not a list"
    for i, guard in enumerate(guards):
        problem = check_guard(guard)
        if problem:
            return f"{entry}: guards_code[{i}] is not a shape guard: {problem}"
    ranges = model.get("range_constraints", {})
    if not isinstance(ranges, dict):
        return f"{entry}: range_constraints is not an object"
    for name, bounds in ranges.items():
        if not SYMBOL_NAME.fullmatch(name):
            return f"{entry}: range_constraints names '{name[:40]}', not a symbol like s0"
        if not isinstance(bounds, dict) or not all(
                v is None or (isinstance(v, int) and abs(v) < MAX_INT) for v in bounds.values()):
            return f"{entry}: range_constraints['{name}'] holds bounds other than integers"
    return None


def check_payload_sizes(config: dict, entry: str, record_bytes: dict[str, int]) -> str | None:
    """Why a weights/constants config declares tensors beyond the memory budget or beyond their
    records, or None. ``record_bytes``: each payload file's size in the archive."""
    for fqn, meta in config.items():
        tensor_meta = meta.get("tensor_meta") if isinstance(meta, dict) else None
        if tensor_meta is None:
            continue
        try:
            sizes = [_as_int(s) for s in tensor_meta["sizes"]]
            element = ELEMENT_BYTES.get(tensor_meta["dtype"], 16)
        except (KeyError, TypeError, ValueError):
            return f"{entry}: '{fqn}' has malformed tensor sizes"
        numel = 1
        for size in sizes:
            if size < 0:
                return f"{entry}: '{fqn}' has a negative size"
            numel *= size
            if numel * element > MAX_TENSOR_BYTES:
                return (f"{entry}: '{fqn}' declares more than {MAX_TENSOR_BYTES >> 20} MiB "
                        f"(shape {sizes[:8]})")
        record = record_bytes.get(str(meta.get("path_name")))
        if record is None:
            return f"{entry}: '{fqn}' names a payload file the archive does not hold"
        if record == 0 and numel > 0:
            # torch fills an empty record with torch.zeros(sizes): memory the file never paid for
            return f"{entry}: '{fqn}' declares shape {sizes[:8]} but its record is empty"
    return None


def _as_int(size: object) -> int:
    if isinstance(size, dict) and "as_int" in size and isinstance(size["as_int"], int):
        return size["as_int"]
    if isinstance(size, dict) and "as_expr" in size:
        hint = (size["as_expr"] or {}).get("hint") or {}
        value = hint.get("as_int") if isinstance(hint, dict) else None
        if isinstance(value, int):
            return value
    raise ValueError("size without a value")



def _walk(value: object, where: str = "") -> Iterator[tuple[str, str, object, dict]]:
    """Every (path, key, value, the object holding it) of a JSON document, without recursion (a deep file cannot
    overflow the stack here)."""
    stack = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                yield path, str(key), child, item
                stack.append((f"{path}/{str(key)[:40]}", child))
        elif isinstance(item, list):
            for i, child in enumerate(item):
                stack.append((f"{path}[{i}]", child))
