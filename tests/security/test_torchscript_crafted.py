"""TorchScript archives run their own code when loaded (``__setstate__``) and converted
(``forward``), and TorchScript's ``torch.from_file(path, True, n)`` creates or overwrites files.
Without ``--trust-code`` none of it may run: exit 2, one line naming the flag, no marker file."""

from __future__ import annotations

from typing import Tuple

import pytest
import torch
from torch import nn

from tests.security.helpers import assert_refused, run_cli, run_process


class WritesInForward(nn.Module):
    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        touched = torch.from_file(self.marker, True, 4)  # used, or TorchScript drops the call
        return self.fc(x).relu() + touched.sum() * 0


class WritesInSetstate(nn.Module):
    def __init__(self, marker: str):
        super().__init__()
        self.marker = marker
        self.weight = torch.zeros(10, 64)

    def forward(self, x):
        return torch.nn.functional.linear(x, self.weight).relu()

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, torch.Tensor, bool]:
        return (self.marker, self.weight, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, torch.Tensor, bool]) -> None:
        self.marker = state[0]
        self.training = state[2]
        self.weight = state[1] + torch.from_file(self.marker, True, 4).sum() * 0


@pytest.fixture(params=[WritesInForward, WritesInSetstate])
def crafted(request, tmp_path):
    marker = tmp_path / "MARKER"
    path = tmp_path / "model.pt2"  # any name: the content decides
    torch.jit.save(torch.jit.script(request.param(str(marker))), path)
    assert not marker.exists()
    return path, marker


def test_torchscript_is_refused_without_the_flag(crafted, tmp_path):
    path, marker = crafted
    for args in (["inspect", path], [path, "--target", "nir", "-o", tmp_path / "out"]):
        code, _, err = run_cli(args)
        assert_refused(code, err, marker, "--trust-code")
    assert not (tmp_path / "out").exists()


def test_torchscript_refusal_in_a_real_process(crafted, tmp_path):
    path, marker = crafted
    proc = run_process(["inspect", path])
    assert_refused(proc.returncode, proc.stderr, marker, "TorchScript archive holds code")


@pytest.mark.parametrize("flag", ["--trust-code", "--trust-pickle"])
def test_with_the_flag_the_code_runs_which_is_why_it_needs_one(tmp_path, flag):
    """The control: torch.jit.load runs __setstate__ (the converter traces forward on fake
    tensors, so WritesInForward's call may not reach the disk here)."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(WritesInSetstate(str(marker))), path)
    run_cli(["inspect", path, flag])
    assert marker.exists()
