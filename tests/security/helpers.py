"""Running the real CLI on crafted files and judging the outcome: no marker file, the exit code,
one error line on stderr, no traceback."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from snncompile.cli import main

ROOT = Path(__file__).resolve().parents[2]
MLP = ROOT / "examples" / "digits_mlp.pt2"
CNN = ROOT / "examples" / "digits_cnn.pt2"


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """The CLI in this process (fast): exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def run_process(args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """The CLI as its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "snncompile.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, **kw)


def assert_refused(code: int, err: str, marker: Path | None = None, fragment: str = "", exit_code: int = 2):
    assert marker is None or not marker.exists(), f"the crafted file ran code: {marker} exists"
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("snncompile: error: "), err
    assert fragment in lines[0], lines[0]
    assert code == exit_code, (code, err)


def rewrite_pt2(src: Path, dst: Path, edit_model=None, edit_weights=None, extra: dict | None = None,
                replace: dict | None = None) -> Path:
    """A copy of the .pt2 ``src`` whose models/model.json (and weights config) went through the
    edit functions (each takes and returns the parsed JSON); ``replace`` maps a member's name suffix to
    its new bytes, ``extra`` adds members."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if edit_model and info.filename.endswith("models/model.json"):
                data = json.dumps(edit_model(json.loads(data))).encode()
            if edit_weights and info.filename.endswith("_weights_config.json"):
                data = json.dumps(edit_weights(json.loads(data))).encode()
            for suffix, content in (replace or {}).items():
                if info.filename.endswith(suffix):
                    data = content
            zout.writestr(info.filename, data)
        for name, data in (extra or {}).items():
            zout.writestr(name, data)
    return dst
