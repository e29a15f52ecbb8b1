"""The output folder: checked before any work, written whole or not at all.

- ``check`` (before the run): refuses ``/``, a symbolic link (dangling or not), a name longer than
  the file system allows, a file, a folder that cannot be written, a folder holding the input
  model or data (replacing the folder would delete them), and an existing folder holding files
  snncompile did not write (they would be deleted with the previous run's outputs).
- ``write`` (after the run): every file goes into a staging folder beside OUTDIR; then OUTDIR
  and the staging folder are exchanged in one ``renameat2(RENAME_EXCHANGE)`` (Linux; elsewhere
  two renames with SIGINT and SIGTERM held in between), and the previous run's folder is
  removed. So OUTDIR holds either the previous run's files or this run's, never a mix and never
  a stale bundle beside new reports; a failure or an interrupt leaves it as it was.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from snncompile.runtime import interrupts
from snncompile.errors import SnnCompileError

# Everything snncompile writes into OUTDIR (compile, and verify's pages).
OUR_NAMES = frozenset({"model.nir", "model.net", "network.json", "network.npz", "run_on_loihi.py",
                       "lava_fastconv.py",
                       "report.json", "report.md", "report.html", "plots", "verify.html", "verify.md"})
STAGING_PREFIX = ".snncompile-"
NAME_MAX = 255  # bytes in one file name (Linux, macOS)


class OutputFolderError(SnnCompileError):
    """The output folder cannot be written as asked; nothing was written."""


def check(outdir: str | Path, inputs: tuple = ()) -> Path:
    """``outdir`` as a Path after the checks of the module docstring; OutputFolderError when one
    fails. ``inputs``: the files the run reads (model, data), which OUTDIR must not hold."""
    outdir = Path(outdir)
    try:
        return _check(outdir, inputs)
    except OSError as exc:  # a path the system refuses to look at (too long, a loop of links...)
        raise OutputFolderError(f"{str(outdir)[:80]}: cannot use as the output folder "
                                f"({exc.strerror or exc}); pass another folder with -o") from None


def _check(outdir: Path, inputs: tuple) -> Path:
    hint = "pass another folder with -o"
    absolute = Path(os.path.abspath(outdir))
    too_long = [p.name for p in (absolute, *absolute.parents) if len(os.fsencode(p.name)) > NAME_MAX]
    if too_long:
        raise OutputFolderError(f"{str(outdir)[:80]}...: the name is longer than the {NAME_MAX} bytes "
                                f"a file system allows; {hint}")
    if outdir.is_symlink():
        what = "a dangling symbolic link" if not outdir.exists() else "a symbolic link"
        raise OutputFolderError(f"{outdir}: the output folder is {what}; {hint}")
    if absolute == Path(absolute.anchor):
        raise OutputFolderError(f"{outdir}: will not write into the root folder; {hint}")
    if outdir.exists() and not outdir.is_dir():
        raise OutputFolderError(f"{outdir}: the output folder is an existing file; pass a folder with -o")
    existing = absolute
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK) or not _can_create_in(existing):
        raise OutputFolderError(f"{outdir}: cannot write the output folder ({existing} is not a writable "
                                f"folder); {hint}")
    for path in inputs:
        if path is None or not Path(path).exists():
            continue
        resolved = Path(path).resolve()
        if resolved == absolute.resolve() or absolute.resolve() in resolved.parents:
            raise OutputFolderError(f"{outdir}: holds the input {path}, which replacing the output "
                                    f"folder would delete; {hint}")
    if outdir.is_dir():
        if not os.access(outdir, os.W_OK | os.X_OK) or not os.access(absolute.parent, os.W_OK | os.X_OK):
            raise OutputFolderError(f"{outdir}: cannot replace the output folder (it or its parent is "
                                    f"read-only); {hint}")
        _check_ours(outdir)
    return outdir


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can really be made in ``folder`` (os.access says yes for root in /proc or
    on a read-only mount): one made and removed at once."""
    import tempfile

    try:
        os.rmdir(tempfile.mkdtemp(prefix=".snncompile-probe-", dir=folder))
    except OSError:
        return False
    return True


def _check_ours(outdir: Path) -> None:
    """An existing OUTDIR may hold only what an earlier run wrote (or nothing)."""
    names = sorted(p.name for p in outdir.iterdir())
    if not names:
        return
    foreign = [n for n in names if n not in OUR_NAMES]
    earlier = _is_our_report(outdir / "report.json")  # every run writes it
    if foreign or not earlier:
        listed = ", ".join((foreign or names)[:4]) + (" ..." if len(foreign or names) > 4 else "")
        raise OutputFolderError(
            f"{outdir}: the output folder holds files snncompile did not write ({listed}); a run "
            "replaces the whole folder, so pass an empty or new folder with -o (or move them)")


def _is_our_report(path: Path) -> bool:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and {"target", "steps", "bit_exact"} <= set(doc)


def write(outdir: str | Path, fill: Callable[[Path], dict[str, Path]]) -> dict[str, Path]:
    """Run ``fill(staging)`` (it writes the files, returns {key: path in staging}), then put the
    staging folder in OUTDIR's place as the module docstring says; {key: path in OUTDIR}."""
    outdir = Path(outdir)
    parent = Path(os.path.abspath(outdir)).parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent))
        staging.chmod(0o755)  # mkdtemp's 0700 would become the output folder's mode
    except OSError as exc:
        raise OutputFolderError(f"{outdir}: cannot write the output folder ({exc.strerror or exc})") from None
    interrupts.on_hard_exit(staging)
    try:
        files = fill(staging)
        _swap(outdir, staging)
    except OSError as exc:
        raise OutputFolderError(f"{outdir}: writing the outputs failed ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # the previous run's files, after a swap
        interrupts.forget(staging)
    return {key: outdir / path.relative_to(staging) for key, path in files.items()}


def _swap(outdir: Path, staging: Path) -> None:
    with interrupts.deferred():
        if not outdir.exists():
            os.rename(staging, outdir)
            return
        _check_ours(outdir)  # again: files may have appeared during the run
        if _exchange(staging, outdir):
            return
        old = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=staging.parent))
        os.rename(outdir, old / "previous")
        os.rename(staging, outdir)
        os.rename(old, staging)  # removed with the staging folder


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code))
