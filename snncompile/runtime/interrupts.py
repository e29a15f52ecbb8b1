"""Ctrl-C and SIGTERM end a run quickly and cleanly, in whatever phase it is.

``install()`` (the CLI calls it) makes SIGINT and SIGTERM raise :class:`Interrupted` in the main
process. It is a BaseException, so the ``except Exception`` of libraries does not swallow it,
and ``finally`` blocks still clean up (the staging output folder goes; the output folder is left
as it was). Child processes forked after ``install`` (Lava's actors) inherit the handler: there
SIGINT is ignored (the parent decides) and SIGTERM ends the child at once, which is how
:func:`stop_children` stops them. The CLI then prints ``snncompile: interrupted`` and exits with
128 + the signal's number (130 for SIGINT, 143 for SIGTERM).

A raise from a signal handler can be lost: Python ignores exceptions raised in at-fork
callbacks, finalizers and weakref callbacks, and a signal landing while Lava forks its actors
ends up there (measured: the run then went on to finish, exit 0). So a watchdog thread, woken by
the first signal, raises it again in the main thread after 1 s, and after ``HARD_EXIT_S`` runs
the registered cleanups (the staging folder), stops the children, prints the line and ends the
process with ``os._exit``: a run ends within 5 s of the signal whatever it was doing.
"""

from __future__ import annotations

import _thread
import multiprocessing
import os
import shutil
import sys
import threading
import time
import signal

SIGNALS = (signal.SIGINT, signal.SIGTERM)
RERAISE_S = 1.0  # the first raise was lost: raise once more
HARD_EXIT_S = 4.0  # still running: clean up and leave


class Interrupted(BaseException):
    """The run was stopped by a signal; ``exit_code`` is 128 + its number."""

    def __init__(self, signum: int):
        self.signum = signum
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


_owner: int | None = None
_signalled = threading.Event()
_state = {"signum": None, "handling": False, "reported": False, "as_json": False}
_cleanups: list = []  # staging folders (Path) and stop functions, for a hard exit


def _handle(signum, _frame):
    if os.getpid() != _owner:  # a forked child (a Lava actor): the parent stops it
        if signum == signal.SIGTERM:
            os._exit(128 + signum)
        return
    if _state["signum"] is None:
        _state["signum"] = signum
        _signalled.set()
    raise Interrupted(_state["signum"])


def install(as_json: bool = False) -> None:
    """SIGINT and SIGTERM raise Interrupted in this process from now on (main thread only)."""
    global _owner
    _owner = os.getpid()
    _state["as_json"] = as_json
    for signum in SIGNALS:
        signal.signal(signum, _handle)
    default_hook = sys.unraisablehook

    def quiet_when_lost(unraisable):
        # a lost raise (see the module docstring) is not an error to print: the watchdog acts
        if not isinstance(unraisable.exc_value, (Interrupted, KeyboardInterrupt)):
            default_hook(unraisable)

    sys.unraisablehook = quiet_when_lost
    _start_quiet_resource_tracker()
    threading.Thread(target=_watchdog, name="snncompile-interrupt-watchdog", daemon=True).start()


def _start_quiet_resource_tracker() -> None:
    """multiprocessing's resource tracker (a process of its own) unlinks the shared memory of
    Lava actors a signal stopped, and warns about each on stderr: start it with stderr on
    /dev/null, so that an interrupted run still prints one line."""
    try:
        from multiprocessing import resource_tracker

        saved = os.dup(2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, 2)
            resource_tracker.ensure_running()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(devnull)
    except Exception:  # noqa: BLE001 - only a quieter exit is at stake
        pass


def signalled() -> int | None:
    """The signal that asked this run to stop, or None."""
    return _state["signum"]


def _watchdog() -> None:
    _signalled.wait()
    start = time.monotonic()
    time.sleep(RERAISE_S)
    if not _state["handling"]:
        _thread.interrupt_main(_state["signum"])
    time.sleep(max(0.0, HARD_EXIT_S - (time.monotonic() - start)))
    for cleanup in list(_cleanups):
        try:
            cleanup() if callable(cleanup) else shutil.rmtree(cleanup, ignore_errors=True)
        except Exception:  # noqa: BLE001 - leaving is what matters now
            pass
    stop_children(timeout=0.3)
    report()
    os._exit(128 + _state["signum"])


def handling() -> None:
    """The main thread caught Interrupted and is ending the run: no second raise."""
    _state["handling"] = True


def report() -> int:
    """Print ``snncompile: interrupted`` (once; with --json also the JSON error); the exit code."""
    code = 128 + (_state["signum"] or signal.SIGINT)
    if not _state["reported"]:
        _state["reported"] = True
        # os.write, not print: the main thread may hold sys.stderr's lock when the watchdog leaves
        os.write(2, b"snncompile: interrupted\n")
        if _state["as_json"]:
            import json

            os.write(1, (json.dumps({"error": "interrupted", "exit_code": code}) + "\n").encode())
    return code


def on_hard_exit(cleanup) -> None:
    """Remove ``cleanup`` (a staging folder's Path) or call it (a function stopping a Lava
    runtime) if the run ends by a hard exit while it is registered."""
    _cleanups.append(cleanup)


def forget(cleanup) -> None:
    if cleanup in _cleanups:
        _cleanups.remove(cleanup)


def stop_children(timeout: float = 2.0) -> None:
    """Terminate every child process this process started (Lava's actors and its shared-memory
    server), then kill those still alive after ``timeout`` seconds; never raises."""
    children = multiprocessing.active_children()
    for child in children:
        try:
            child.terminate()
        except Exception:  # noqa: BLE001 - already gone
            pass
    for child in children:
        try:
            # Process.join itself: Lava's SystemProcess.join takes no timeout and waits forever
            multiprocessing.Process.join(child, timeout)
            if child.is_alive():
                child.kill()
                multiprocessing.Process.join(child, 1.0)
        except Exception:  # noqa: BLE001 - already gone
            pass


class deferred:
    """Hold SIGINT and SIGTERM for the duration of a block that must not be cut in two (the
    swap of the output folder); a signal that arrived meanwhile is delivered on exit."""

    def __enter__(self):
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        return self

    def __exit__(self, *exc):
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)
        return False
