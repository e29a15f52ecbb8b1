#!/usr/bin/env python3
"""Regenerate (or check) the README's worked example: the real output of `make demo`.

    .venv/bin/python scripts/readme_example.py           # run the demo command, rewrite README.md's block
    .venv/bin/python scripts/readme_example.py --check   # exit 1 (and show a diff) when the block is stale

The block is the fenced text between ``<!-- example-output:start -->`` and
``<!-- example-output:end -->`` in README.md. Its first line is ``$ make demo``, its second the
command make echoes (read from ``make -n demo``, so a change to the Makefile is followed), then
what that command prints on stdout. The command runs here with its ``-o`` folder replaced by a
temporary one (so the repository's out/ is left alone) and that folder's name is written back as
the Makefile's in the text. Lines that hold only timings are ignored when comparing (none are
printed today), and trailing spaces are dropped. tests/test_readme.py runs the same functions.
Takes about a minute (Lava runs 4 samples): rerun it after changing what the CLI prints.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START = "<!-- example-output:start -->"
END = "<!-- example-output:end -->"
# what `make demo` runs when make is not there to ask (keep in step with the Makefile)
FALLBACK = ".venv/bin/snncompile examples/digits_cnn.pt2 --target loihi2 -o out/digits_cnn --steps 32"
# a number with a time unit ("12.3 s", "850 ms", "1m02s", "0:01:02") or a word that says time
_TIME = re.compile(r"\b\d+(\.\d+)?\s?(s|ms|sec|secs|seconds|min)\b|\b\d+:\d\d(:\d\d)?\b|\b(elapsed|took)\b", re.I)


def demo_command() -> str:
    """The snncompile line of ``make -n demo`` (the command make echoes), else FALLBACK."""
    try:
        proc = subprocess.run(["make", "-n", "-s", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return FALLBACK
    lines = [line.strip() for line in proc.stdout.splitlines() if "snncompile " in line and "install" not in line]
    return lines[-1] if proc.returncode == 0 and lines else FALLBACK


def run_example(command: str | None = None) -> str:
    """The block's text: '$ make demo', the echoed command, and its stdout (normalized)."""
    command = command or demo_command()
    argv = shlex.split(command)
    outdir = argv[argv.index("-o") + 1]
    with tempfile.TemporaryDirectory(prefix="snncompile-readme-") as tmp:
        args = list(argv[1:])
        args[args.index("-o") + 1] = tmp
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"} | {"PYTHONUNBUFFERED": "1"}
        proc = subprocess.run([sys.executable, "-m", "snncompile.cli", *args], cwd=ROOT, capture_output=True,
                              text=True, timeout=1200, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{command} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        stdout = proc.stdout.replace(tmp, outdir)
    return "\n".join(["$ make demo", command, *(line.rstrip() for line in stdout.strip().splitlines())])


def readme_block(text: str | None = None) -> str:
    """The current block in README.md, without its fence lines."""
    text = README.read_text() if text is None else text
    if text.count(START) != 1 or text.count(END) != 1:
        raise ValueError(f"README.md must hold {START} and {END} once each")
    inner = text[text.index(START) + len(START):text.index(END)].strip().splitlines()
    if not inner or not inner[0].startswith("```") or inner[-1].strip() != "```":
        raise ValueError("the example block must be one fenced code block")
    return "\n".join(line.rstrip() for line in inner[1:-1])


def comparable(block: str) -> list[str]:
    """The lines that must match: timing-only lines dropped."""
    return [line for line in block.splitlines() if not _timing_only(line)]


def _timing_only(line: str) -> bool:
    return bool(_TIME.search(line)) and not re.search(r"\d", _TIME.sub("", line))


def rewrite(block: str) -> None:
    text = README.read_text()
    readme_block(text)  # the markers are there, once each
    head, rest = text.split(START)
    _, tail = rest.split(END)
    README.write_text(f"{head}{START}\n```text\n{block}\n```\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="compare only; exit 1 when README.md is stale")
    args = p.parse_args(argv)
    fresh = run_example()
    if args.check:
        old = readme_block()
        if comparable(old) == comparable(fresh):
            print("README.md's worked example matches what `make demo` prints")
            return 0
        sys.stdout.writelines(difflib.unified_diff([f"{x}\n" for x in comparable(old)],
                                                   [f"{x}\n" for x in comparable(fresh)], "README.md", "make demo"))
        return 1
    rewrite(fresh)
    print(f"rewrote the worked example in {README}:\n{fresh}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
