"""The README's worked example is what `make demo` prints today (scripts/readme_example.py runs it)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_example", ROOT / "scripts" / "readme_example.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _script()


def test_block_is_the_make_demo_command():
    block = example.readme_block().splitlines()
    assert block[:2] == ["$ make demo", example.demo_command()]
    assert example.demo_command().split()[1:3] == ["examples/digits_cnn.pt2", "--target"]


def test_timing_only_lines_are_ignored_and_nothing_else():
    assert example.comparable("a: 1\ncompiled in 12.5 s\ntook 3 min\nwrote x\n0:01:02") == ["a: 1", "wrote x"]
    kept = ["target: loihi2   steps: 32   test samples: 360", "saturations: 3 (3 v_clipped_low in relu_2)",
            "Lava fixed_pt vs reference: 4 samples x 3 layers x 32 steps, mismatches: 0",
            "Loihi 2: 1 core(s) on 1 of 1 chip(s); lower bound 1 core(s), ratio 1.00"]
    assert example.comparable("\n".join(kept)) == kept


@pytest.mark.lava
def test_readme_example_matches_what_the_command_prints():
    fresh = example.run_example()
    assert "mismatches: 0" in fresh  # the demo itself works
    assert example.comparable(example.readme_block()) == example.comparable(fresh), (
        "README.md's worked example is stale: run .venv/bin/python scripts/readme_example.py")
