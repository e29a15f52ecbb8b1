"""How the compile passes ask the operating system for memory.

numpy asks Linux for transparent huge pages (``madvise(MADV_HUGEPAGE)``) on every array of 4 MB
or more. Where the kernel's THP ``defrag`` setting is ``madvise`` (Ubuntu's default, and this
project's CI machine: ``/sys/kernel/mm/transparent_hugepage/defrag``), each such page fault may
stall in direct compaction. The compile passes write one fresh copy of the model's weights per
pass and read it a few times, so they only pay that stall. Measured on ResNet-18 at 224×224
(2 cores, `benchmarks/scale.py`): a 19 MB folded weight took 38 ms with huge pages against 12 ms
with 4 KB pages, and quantization took 0.33 s against 0.16 s. ``small_pages`` turns numpy's
request off for the duration of a block and restores the previous setting afterwards. The
simulators are left as they are: their long-lived buffers are read many times.
"""

from __future__ import annotations

import contextlib

try:  # numpy >= 1.20 on Linux; the setter returns the previous setting
    from numpy.core.multiarray import _set_madvise_hugepage
except ImportError:  # pragma: no cover - other platforms or numpy versions
    _set_madvise_hugepage = None


class small_pages(contextlib.ContextDecorator):
    """``with small_pages(): …`` (or ``@small_pages()``): numpy arrays allocated inside use the
    kernel's default pages."""

    def __enter__(self):
        self.previous = _set_madvise_hugepage(False) if _set_madvise_hugepage is not None else None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            _set_madvise_hugepage(self.previous)
        return False

