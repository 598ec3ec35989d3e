"""Where log lines go: one writer thread per destination, so the event loop never waits on a disk,
a pipe or a terminal, and lines leave in the order they were written.

Owns opening, writing, reopening (SIGUSR1, for logrotate) and what happens when writing fails
(reported once, never raised to the caller). It knows nothing of what a line says: a caller
hands over a line's text, or an item whose text the writer's `LineMaker` makes when the batch
is written.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import Final

# Lines are gathered this long before one write: at tens of thousands of requests a second one
# write (and one wake-up of this thread) then carries hundreds of lines.
LINGER_SECONDS = 0.05
# Lines held while the destination does not take them (a stalled pipe); past this, new lines
# are dropped (and counted) rather than the process growing without bound.
MAX_PENDING = 100_000
FILE_MODE = 0o640

_REOPEN: Final = object()


class LineMaker:
    """Makes the text of the items a writer was handed instead of text, just before they are
    written (in the writer's thread once it runs); whoever hands over an item never changes it
    again. A base class rather than a protocol, so that, compiled, the writer calls `line` as a
    C method."""

    __slots__ = ()

    def line(self, item: object) -> str:
        raise NotImplementedError


def report(message: str) -> None:
    """A problem of the log writers themselves, on standard error (best effort)."""
    with contextlib.suppress(OSError):
        os.write(2, f"edge-proxy: {message}\n".encode())


class LineWriter:
    """Appends lines (text, each ending in a newline) to standard output, standard error or a file,
    as UTF-8 (what cannot be encoded written as backslash escapes). A batch of lines is made
    (`maker.line(item)` for what is not text yet), joined and encoded at once, in the writer thread.

    Writes directly (blocking) until `start()`, through its thread from then until `close()`:
    a process starts the thread only after it forks its workers, so none is copied into a child.
    `write` may be called from any thread. A failed write drops that batch, says so once on
    standard error, and the writer carries on: when the destination takes lines again, so does it.
    """

    def __init__(self, path: Path | None = None, *, fd: int = 1, label: str | None = None, linger: float = LINGER_SECONDS) -> None:
        """`linger`: how long the thread gathers lines before a write (0: at once, for rare lines)."""
        self.path = path
        self.maker = LineMaker()  # set by the owner of the items it is handed, before it hands any
        self._linger = linger
        self.label = label or (str(path) if path is not None else {1: "standard output", 2: "standard error"}.get(fd, f"fd {fd}"))
        self._std_fd = fd
        self._fd = -1
        self._wake = threading.Event()
        # deque.append and popleft are atomic: a line costs no lock. The thread clears `_wake`
        # and `_woken` before it takes lines, so a line appended after that sees it clear and sets it.
        self._pending: deque[object] = deque()
        self._append = self._pending.append  # bound once: a line pays a call, not a lookup
        self._max_pending = MAX_PENDING
        self._woken = False  # `_wake` was set since the thread last took lines
        self._thread: threading.Thread | None = None
        self._closing = False
        self._failing = False
        self._dropped = 0

    # --- what callers use ---------------------------------------------------------------------

    def write(self, line: object) -> None:
        """Write `line`: text ending in a newline, or an item the maker makes the text of."""
        if self._thread is None:
            self._write_now([line])
            return
        if len(self._pending) >= self._max_pending:
            self._dropped += 1  # a lost count under a race only understates a report
            return
        self._append(line)
        if not self._woken:  # a plain flag: Event.is_set is a Python call on every line
            self._woken = True
            self._wake.set()

    def reopen(self) -> None:
        """Close and open the file again after the lines written so far (a no-op for standard
        streams): logrotate renames the file, then signals, as it does for nginx."""
        if self.path is None:
            return
        if self._thread is None:
            self._reopen()
            return
        self._pending.append(_REOPEN)
        self._wake.set()

    def start(self) -> None:
        """From now on lines are written by the writer thread."""
        if self._thread is None:
            self._closing = False
            self._thread = threading.Thread(target=self._run, name=f"log writer ({self.label})", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Write what is pending, stop the thread; later lines are written directly again."""
        thread = self._thread
        if thread is not None:
            self._closing = True
            self._wake.set()
            thread.join(timeout=10)
            self._thread = None
        if self.path is not None and self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # --- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        pending = self._pending
        while True:
            self._wake.wait()
            if self._linger and not self._closing:
                time.sleep(self._linger)
            # Event first, flag second, lines last: a line appended before the flag is cleared
            # is in this batch; one appended after it sets the event again.
            self._wake.clear()
            self._woken = False
            take = pending.popleft
            batch = [take() for _ in range(len(pending))]
            dropped, self._dropped = self._dropped, 0
            if dropped:
                report(f"{self.label} is not keeping up: {dropped} log line(s) dropped")
            self._write_batch(batch)
            if pending:
                self._wake.set()  # appended while this batch was taken: the next round takes them
            elif self._closing:
                return

    def _write_batch(self, batch: list[object]) -> None:
        lines: list[object] = []
        for item in batch:
            if item is _REOPEN:
                self._write_now(lines)
                lines = []
                self._reopen()
            else:
                lines.append(item)
        self._write_now(lines)

    def _write_now(self, lines: list[object]) -> None:
        if not lines:
            return
        texts: list[str] = []
        maker = self.maker
        try:
            for line in lines:
                texts.append(line if isinstance(line, str) else maker.line(line))
        except Exception:  # noqa: BLE001 - a line that cannot be made is lost, never the others
            texts = _made(maker, lines)
        data = "".join(texts).encode("utf-8", "backslashreplace")
        try:
            fd = self._open()
            while data:
                written = os.write(fd, data)
                data = data[written:]
        except OSError as e:
            if not self._failing:
                self._failing = True
                report(f"cannot write log lines to {self.label}: {e.strerror or e}; dropping lines until it works again")
            return
        if self._failing:
            self._failing = False
            report(f"writing log lines to {self.label} again")

    def _open(self) -> int:
        if self.path is None:
            return self._std_fd
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
        return self._fd

    def _reopen(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        try:
            self._open()
        except OSError as e:
            self._failing = True
            report(f"cannot reopen {self.label}: {e.strerror or e}; dropping lines until it works again")


def _made(maker: LineMaker, lines: list[object]) -> list[str]:
    """The texts of the lines that can be made; each that cannot is reported and left out."""
    texts = []
    for line in lines:
        if isinstance(line, str):
            texts.append(line)
            continue
        try:
            texts.append(maker.line(line))
        except Exception as e:  # noqa: BLE001
            report(f"a log line could not be made and is left out: {type(e).__name__}: {e}")
    return texts


def stderr_writer() -> LineWriter:
    """The writer of the edge's own lines: few, so each is written at once, in order."""
    sys.stderr.flush()
    return LineWriter(fd=2, linger=0)
