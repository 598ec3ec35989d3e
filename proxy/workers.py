"""The process model of `server.workers > 1`: forking the workers, the pipes between them and
the first process, signals, reaping.

The first process forks before it has a thread or an event loop; each worker waits until the
first process serves, reports once it serves itself and keeps that pipe open for its life, and
stops on its own if the first process disappears. It knows nothing of listeners, certificates
or health: the caller decides what a report or an exit means.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable

log = logging.getLogger("proxy")

# How often a worker checks that the first process still runs.
ORPHAN_CHECK_SECONDS = 1.0


class Workers:
    """The forked siblings of the first process: the same edge, sharing ports via SO_REUSEPORT.

    Each worker reports through a pipe once it serves and holds the pipe open for as long as it
    runs, so the first process learns when all serve and when one exits; a worker whose first
    process is gone (killed outright, without the chance to stop it) is told to stop instead of
    serving on alone.
    """

    def __init__(self) -> None:
        self.pids: list[int] = []
        self._serving_pipes: list[int] = []  # in the first process: a read end per worker
        self._report_pipe: int | None = None  # in a worker: the write end of its own
        # Workers start only once the first process serves, so that they load the certificate it
        # chose (on a first start, the self-signed default it generated) instead of racing it.
        self._go_pipes: list[int] = []  # in the first process: a write end per worker
        self._go_pipe: int | None = None  # in a worker: the read end of its own
        self._first_process = os.getpid()

    def fork(self, count: int) -> int:
        """Fork `count` workers. Returns 0 here, and in each worker its index (1 to count)."""
        for index in range(1, count + 1):
            serving_read, serving_write = os.pipe()
            go_read, go_write = os.pipe()
            pid = os.fork()
            if pid == 0:
                for fd in (serving_read, go_write, *self._serving_pipes, *self._go_pipes):
                    os.close(fd)
                self.pids, self._serving_pipes, self._go_pipes = [], [], []
                self._report_pipe, self._go_pipe = serving_write, go_read
                return index
            os.close(serving_write)
            os.close(go_read)
            self.pids.append(pid)
            self._serving_pipes.append(serving_read)
            self._go_pipes.append(go_write)
        return 0

    # --- in a worker ---------------------------------------------------------------------

    @property
    def in_worker(self) -> bool:
        """True in a forked worker; False in the first process, with or without workers."""
        return self._report_pipe is not None

    def wait_for_first_process(self) -> bool:
        """Block until the first process serves; False if it ended without serving."""
        # A reload asked meanwhile is moot: the worker reads the directory when it starts.
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        assert self._go_pipe is not None
        try:
            go = os.read(self._go_pipe, 1)
        except OSError:
            go = b""
        os.close(self._go_pipe)
        self._go_pipe = None
        return go == b"1"

    def report_serving(self) -> None:
        if self._report_pipe is not None:
            os.write(self._report_pipe, b"1")  # the pipe stays open: its end is this worker's end

    def watch_first_process(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        def check() -> None:
            if os.getppid() != self._first_process:
                log.warning("the first process (pid %d) is gone: stopping this worker", self._first_process)
                stop.set()
            else:
                loop.call_later(ORPHAN_CHECK_SECONDS, check)

        loop.call_later(ORPHAN_CHECK_SECONDS, check)

    # --- in the first process ------------------------------------------------------------

    def watch_serving(self, loop: asyncio.AbstractEventLoop, on_change: Callable[[bool, int | None], None]) -> None:
        """Call `on_change(all_serving, exited_pid)` when a worker reports that it serves (all
        serving: from the last report until any worker exits) and when one exits."""
        waiting = set(self._serving_pipes)
        exited: list[int] = []

        def on_pipe(fd: int, pid: int) -> None:
            try:
                report = os.read(fd, 1)
            except OSError:
                report = b""
            if report == b"1":
                waiting.discard(fd)
                on_change(not waiting and not exited, None)
                return
            loop.remove_reader(fd)
            os.close(fd)
            _reaped(pid)  # reaped now if already gone (else at stop): no zombie kept by a PID 1
            exited.append(pid)
            on_change(False, pid)

        for fd, pid in zip(self._serving_pipes, self.pids, strict=True):
            loop.add_reader(fd, on_pipe, fd, pid)

    def release(self, go: bool = True) -> None:
        """Let the workers start (or, with go=False, tell them the first process will not)."""
        for fd in self._go_pipes:
            with contextlib.suppress(OSError):
                if go:
                    os.write(fd, b"1")
            os.close(fd)
        self._go_pipes = []

    def signal(self, sig: signal.Signals) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def wait(self, timeout: float) -> None:
        """Reap every worker; one still running after `timeout` seconds is killed."""
        deadline = time.monotonic() + timeout
        waiting = list(self.pids)
        while waiting:
            waiting = [pid for pid in waiting if not _reaped(pid)]
            if waiting and time.monotonic() >= deadline:
                for pid in waiting:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
                return
            time.sleep(0.05)


def _reaped(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == pid
