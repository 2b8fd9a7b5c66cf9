"""Progress bars on stderr and per-step peak memory (Linux ``VmHWM``, reset per step)."""

from __future__ import annotations

import resource
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sftfast import _native

__all__ = ["progress", "read_peak_rss", "reset_peak_rss"]


@contextmanager
def progress(label: str, total: int | None, *, enabled: bool, per_row: int = 1) -> Iterator[None]:
    """A one-line bar on stderr: rows done (from the Rust kernels' counter, ``per_row``
    increments a row), rows/s and ETA; elapsed time only when ``per_row`` is 0. Silent
    unless ``enabled`` and stderr is a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield
        return
    start_rows, start = _native.progress_rows(), time.monotonic()
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(0.5):
            elapsed = time.monotonic() - start
            line = f"\r{label}: {elapsed:,.0f}s"
            if per_row:
                done = (_native.progress_rows() - start_rows) // per_row
                rate = done / max(elapsed, 1e-9)
                line = f"\r{label}: {done:,} rows  {rate:,.0f} rows/s"
                if total:
                    eta = max(total - done, 0) / rate if rate > 0 else 0.0
                    line += f"  {100 * min(done / total, 1):5.1f}%  ETA {eta:,.0f}s"
            sys.stderr.write(line + "   ")
            sys.stderr.flush()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        sys.stderr.write("\r" + " " * 80 + "\r")


def reset_peak_rss() -> None:
    """Start a new peak-memory window (Linux: writing 5 to clear_refs resets ``VmHWM``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def read_peak_rss() -> int:
    """Peak resident memory in bytes since :func:`reset_peak_rss` (process peak elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
