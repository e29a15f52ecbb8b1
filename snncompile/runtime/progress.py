"""Where a long run is: each phase's start, progress and elapsed time, on stderr.

A phase (``with phase("reference"):``) reports when it starts and how long it took; a loop in it
(``for batch in track(batches, "reference", unit="batch"):``) reports how far it is. On a
terminal these are tqdm bars. On any other stderr (a log file, a pipe, CI) they are plain lines,
each with a timestamp, never a carriage return:

    2025-05-01 12:00:03 snncompile: Lava: started
    2025-05-01 12:00:13 snncompile: Lava: 2/4 samples (50 %), 10.1 s elapsed, about 10 s left
    2025-05-01 12:00:23 snncompile: Lava: done in 20.2 s

A progress line is written when a loop has done another tenth of its work (at least MIN_GAP_S
after the phase's previous line), and a heartbeat line for the innermost phase when nothing was written
for INTERVAL_S (a single long step still says it is alive). A compile holds its lines back until
its checks are done (``release``) or HOLD_S has passed, and drops them when a phase fails first:
a run refused early (bad model, bad data, too big for the chips, --strict) still prints its one
error line and nothing else. A loop adopts the phase it runs in
when that phase has no loop yet (the phase's progress is the loop's); otherwise it is a phase of
its own, named after its parents ("calibrate > weight calibration relu_2"). ``show=False``
reports nothing: the CLI's ``--quiet`` and ``--no-progress`` (``api.Options.progress``).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator

from tqdm import tqdm

INTERVAL_S = 10.0  # a line at least this often while a phase runs (log mode)
STEP_FRACTION = 0.1  # and one per tenth of a loop's work
HOLD_S = 30.0  # lines held back at most this long (see ``phases(hold=True)``)
MIN_GAP_S = 5.0  # but not within this of the phase's last line (a fast loop: its start and end only)

_stack: list[_Phase] = []
_lock = threading.Lock()
_last_line = [0.0]  # monotonic time of the last line written
_heartbeat: list[threading.Thread] = []
_held: list[str] | None = None  # lines not shown yet (``phases(hold=True)`` until ``release``)
_hold_since = [0.0]


def duration(seconds: float) -> str:
    """'4.2 s', '3 min 05 s', '1 h 02 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


def on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _sized() -> bool:
    """Whether the terminal reports its size (a bare pty says 0 x 0, and tqdm would hide every bar)."""
    try:
        return min(os.get_terminal_size(sys.stderr.fileno())) > 0
    except (AttributeError, OSError, ValueError):
        return False


def _write(text: str) -> None:
    with _lock:
        _last_line[0] = time.monotonic()
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} snncompile: {text}"
        if _held is not None:
            _held.append(line)
        else:
            _emit([line])


def _emit(lines: list[str]) -> None:
    try:
        for line in lines:
            print(line, file=sys.stderr)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr gone: progress is not worth failing for
        pass


def release() -> None:
    """Show the lines held back (the run's checks passed) and stop holding."""
    global _held
    with _lock:
        lines, _held = _held, None
        _emit(lines or [])


def _drop() -> None:
    """A phase failed while lines were held: the error line will stand alone."""
    global _held
    with _lock:
        _held = None


class _Phase:
    def __init__(self, name: str, total: int | None, unit: str):
        self.name = f"{_stack[-1].name} > {name}" if _stack else name
        self.start = self.said = time.monotonic()  # said: this phase's last line
        self.total, self.unit, self.done, self.note = total, unit, 0, ""
        self.looped = total is not None
        self.mark = 0  # tenths of the work already reported
        self.bar = None
        if on_terminal():
            sized = _sized()
            self.bar = tqdm(desc=self.name, total=total, unit=unit or "it", leave=not _stack, file=sys.stderr,
                            dynamic_ncols=sized, ncols=None if sized else 80, nrows=None if sized else 24,
                            bar_format=None if total else "{desc}: {elapsed}")
        else:
            _write(f"{self.name}: started" + (f" ({total} {unit})" if total else ""))

    def loop(self, total: int | None, unit: str) -> None:
        """The phase's progress is now a loop of ``total`` ``unit``."""
        self.looped, self.total, self.unit = True, total, unit
        if self.bar is not None and total:
            self.bar.total, self.bar.unit, self.bar.bar_format = total, unit, None
            self.bar.refresh()

    def working_on(self, note: str) -> None:
        """Name the item being worked on (a layer): on the bar, and in heartbeat lines."""
        self.note = note
        if self.bar is not None:
            self.bar.set_postfix_str(note)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        if not self.total or self.done >= self.total:
            return
        mark = int(self.done / self.total / STEP_FRACTION)
        if mark > self.mark and time.monotonic() - self.said >= MIN_GAP_S:
            self.mark, self.said = mark, time.monotonic()
            _write(self.status(working=False))

    def status(self, working: bool = True) -> str:
        elapsed = time.monotonic() - self.start
        text = f"{self.name}: "
        if self.total:
            text += f"{self.done}/{self.total} {self.unit} ({100 * self.done / self.total:.0f} %), "
        elif self.done:
            text += f"{self.done} {self.unit}, "
        text += f"{duration(elapsed)} elapsed"
        if self.total and 0 < self.done < self.total:
            text += f", about {duration(elapsed * (self.total - self.done) / self.done)} left"
        return text + (f", working on {self.note}" if working and self.note else "")

    def close(self, failed: bool) -> float:
        elapsed = time.monotonic() - self.start
        if self.bar is not None:
            if failed:
                self.bar.leave = False  # the error line stands alone
            elif not self.total:
                self.bar.bar_format = "{desc}: done in {elapsed}"
            self.bar.close()
        elif not failed:
            _write(f"{self.name}: done in {duration(elapsed)}")
        if failed:
            _drop()
        return elapsed


def _beat() -> None:
    """Heartbeat (log mode): a line for the innermost phase when nothing was said for INTERVAL_S."""
    while _stack:
        time.sleep(0.5)
        stack = list(_stack)
        if not stack or stack[-1].bar is not None:
            continue
        now = time.monotonic()
        if _held is not None and now - _hold_since[0] >= HOLD_S:
            release()
        if now - _last_line[0] >= INTERVAL_S:
            _write(stack[-1].status())


@contextlib.contextmanager
def phase(name: str, show: bool = True, timings: dict | None = None, *, total: int | None = None,
          unit: str = "") -> Iterator[_Phase | None]:
    """Report phase ``name``; its seconds go to ``timings[key(name)]`` when given. Yields the
    phase (``update(n)`` after each of ``total`` ``unit``), None when not shown."""
    start = time.monotonic()
    if not show:
        try:
            yield None
        finally:
            if timings is not None:
                timings[key(name)] = time.monotonic() - start
        return
    current = _Phase(name, total, unit)
    _stack.append(current)
    if current.bar is None and not (_heartbeat and _heartbeat[0].is_alive()):
        _heartbeat[:] = [threading.Thread(target=_beat, name="snncompile-progress", daemon=True)]
        _heartbeat[0].start()
    failed = True
    try:
        yield current
        failed = False
    finally:
        _stack.remove(current)
        elapsed = current.close(failed)
        if timings is not None:
            timings[key(name)] = elapsed


def track(items: Iterable, name: str, show: bool = True, *, total: int | None = None, unit: str = "it",
          note=None) -> Iterator:
    """``items``, reporting each one done: the open phase's loop, or a phase of its own.
    ``note(item)``, when given, names the item being worked on (a layer)."""
    if not show:
        yield from items
        return
    total = len(items) if total is None and hasattr(items, "__len__") else total
    parent = _stack[-1] if _stack else None
    if parent is not None and not parent.looped:
        parent.loop(total, unit)
        yield from _counted(items, parent, note)
        return
    with phase(name, total=total, unit=unit) as current:
        yield from _counted(items, current, note)


def _counted(items: Iterable, current: _Phase, note) -> Iterator:
    for item in items:
        if note is not None:
            current.working_on(str(note(item)))
        yield item
        current.update(1)


def key(name: str) -> str:
    """timings key of a phase: 'float SNN' -> 'float_snn_s'."""
    return "_".join(name.lower().split()) + "_s"


def phases(show: bool, timings: dict | None = None, hold: bool = False):
    """``phase`` with ``show`` and ``timings`` bound: ``p = phases(options.progress, timings)``,
    then ``with p("load"): ...``. ``hold``: keep log lines back until ``release()`` (a run's start)."""
    global _held
    if hold and show and not on_terminal():
        with _lock:
            _held, _hold_since[0] = [], time.monotonic()
    return lambda name, **kw: phase(name, show, timings, **kw)
