"""SIGINT and SIGTERM end a run within 5 s in any phase, Lava's included: one line
``snncompile: interrupted``, exit 130 / 143, no process left behind, and the output folder
absent (a new one) or exactly as it was (an earlier run's), no staging folder beside it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.security.helpers import MLP, ROOT, run_cli

LIMIT_S = 5.0


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(c) for c in text.split()]


def _alive_with(token: str) -> list[int]:
    """Processes whose command line holds ``token`` (a run's unique output path): Lava's actors
    are forks of the run and keep its command line."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if token in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupt(out: Path, signum: int, phase: str) -> tuple[int, float, str]:
    """Start a run into ``out``, send ``signum`` in ``phase``; (exit code, seconds to exit, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "snncompile.cli", str(MLP), "-o", str(out), "--steps", "16",
                             "--samples", "60", "--no-progress"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    start = time.monotonic()
    if phase == "lava":  # Lava's actors are child processes (beside the resource tracker)
        while len(_children(proc.pid)) < 3 and proc.poll() is None and time.monotonic() - start < 240:
            time.sleep(0.05)
        time.sleep(0.5)
    else:
        time.sleep(1.5)  # importing torch, loading the model
    assert proc.poll() is None, f"the run ended before the signal: {proc.stderr.read()[-500:]}"
    sent = time.monotonic()
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"still running 60 s after {signal.Signals(signum).name}")
    return proc.returncode, time.monotonic() - sent, err


@pytest.mark.parametrize("signum, phase", [(signal.SIGINT, "lava"), (signal.SIGTERM, "lava"),
                                           (signal.SIGINT, "load"), (signal.SIGTERM, "load")])
def test_a_signal_ends_a_new_run_quickly_leaving_no_output(tmp_path, signum, phase):
    out = tmp_path / "out"
    code, seconds, err = _interrupt(out, signum, phase)
    assert code == 128 + signum, err
    assert seconds < LIMIT_S, seconds
    assert err.strip().splitlines() == ["snncompile: interrupted"], err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no staging folder either
    time.sleep(1.0)
    assert _alive_with(str(out)) == []


def test_an_interrupted_rerun_leaves_the_earlier_output_as_it_was(tmp_path):
    out = tmp_path / "out"
    code, _, err = run_cli([MLP, "--target", "nir", "--steps", "2", "--calib-samples", "4", "-o", out])
    assert code == 0, err
    before = _snapshot(out)
    code, seconds, err = _interrupt(out, signal.SIGINT, "lava")
    assert code == 130 and seconds < LIMIT_S and err.strip() == "snncompile: interrupted", (code, seconds, err)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_rerun_replaces_the_earlier_output_whole(tmp_path):
    """No file of the earlier run stays beside the new ones (a stale bundle)."""
    out = tmp_path / "out"
    (out / "plots").mkdir(parents=True)
    (out / "network.json").write_text("{}")  # an earlier loihi2 run's bundle
    (out / "report.json").write_text('{"target": "loihi2", "steps": 32, "bit_exact": null}')
    code, _, err = run_cli([MLP, "--target", "nir", "--steps", "2", "--calib-samples", "4", "-o", out])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["model.nir", "report.html", "report.json", "report.md"]


@pytest.mark.parametrize("setup, fragment", [
    ("foreign", "did not write (notes.txt)"),
    ("input", "holds the input"),
    ("dangling", "dangling symbolic link"),
    ("root", "root folder"),
    ("long", "longer than the 255 bytes"),
])
def test_output_folders_that_would_lose_data_are_refused_before_work(tmp_path, setup, fragment):
    out = tmp_path / "out"
    model = MLP
    if setup == "foreign":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif setup == "input":
        out.mkdir()
        model = out / "model.pt2"
        model.write_bytes(MLP.read_bytes())
    elif setup == "dangling":
        out.symlink_to(tmp_path / "nowhere")
    elif setup == "root":
        out = Path("/")
    else:
        out = tmp_path / ("x" * 300)
    t0 = time.perf_counter()
    code, _, err = run_cli([model, "--target", "nir", "-o", out])
    assert code == 2 and fragment in err and len(err.strip().splitlines()) == 1, err
    assert time.perf_counter() - t0 < 5  # refused before loading anything heavy
    if setup == "foreign":
        assert (out / "notes.txt").read_text() == "mine"
    if setup == "input":
        assert model.read_bytes() == MLP.read_bytes()
