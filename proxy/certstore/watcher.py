"""Watching `cert_dir`: when to read it again. Each pass calls the intake, which re-reads all
three files and decides by their content whether anything changed.

`events`: watchfiles on the directory (never a file or a symlink, which a replace or a
Kubernetes `..data` swap would orphan), a pass as soon as a batch of events is over, and one
at least every RESCAN_SECONDS. `poll`: a pass every `poll_delay_ms`, nothing else; a poller
that compares timestamps misses a rewrite within the timestamp's granularity, content does
not. Knows nothing about validation, settling or TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path

import watchfiles

log = logging.getLogger("proxy.watcher")
# watchfiles logs every batch at INFO; our own lines say what a change led to.
logging.getLogger("watchfiles").setLevel(logging.WARNING)

# A batch is handed over once no event came for this long. Short, so a complete drop serves in
# tens of milliseconds; waiting for a settled directory is the intake's business, and only for
# material that does not validate. (watchfiles wakes every step: ~4 ms CPU a second at 20 ms.)
EVENT_STEP_MS = 20
MAX_BATCH_MS = 1600  # a directory that never stops changing is still read this often
ARM_PROBE_MS = 250  # how soon the first (empty) batch proves the watch is in place
# With events, the directory is also read this often: a lost event (a full inotify queue, a
# mount that passes no events, a file symlinked from outside the directory) costs at most this
# long, and the last-read metric stays fresh.
RESCAN_SECONDS = 5.0
RESTART_DELAY = 1.0


class DirectoryWatcher:
    """Lifecycle: `start()` returns once the watch is in place (`watching` is set); a change
    made after that is never missed. `stop()` ends it."""

    def __init__(
        self,
        directory: Path,
        on_change: Callable[[], Awaitable[None]],
        *,
        polling: bool = False,
        poll_delay_ms: int = 500,
        rescan_seconds: float = RESCAN_SECONDS,
    ) -> None:
        self.directory = directory
        self._on_change = on_change
        self._polling = polling
        self._poll_delay_ms = poll_delay_ms
        self._rescan_seconds = rescan_seconds
        self._stop = asyncio.Event()
        self._armed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_pass = 0.0

    @property
    def watching(self) -> bool:
        return self._armed.is_set()

    async def start(self, timeout: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch {self.directory}")
        armed = asyncio.create_task(self._armed.wait())
        done, _ = await asyncio.wait({self._task, armed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if armed not in done:
            armed.cancel()
            if self._task in done:
                self._task.result()  # re-raise what stopped the watcher
            raise TimeoutError(f"the watch on {self.directory} did not start within {timeout} s")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self._polling:
                    await self._poll()
                elif self.directory.is_dir():
                    await self._watch_directory()
                else:
                    await self._wait_for_directory()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the directory vanished under the watch, or the OS refused it
                log.warning("watching %s failed (%s); watching again in %.0f s", self.directory, e, RESTART_DELAY)
                await asyncio.sleep(RESTART_DELAY)

    async def _pass(self) -> None:
        self._last_pass = asyncio.get_running_loop().time()
        await self._on_change()

    def _rescan_due(self) -> bool:
        return asyncio.get_running_loop().time() - self._last_pass >= self._rescan_seconds

    async def _poll(self) -> None:
        """Read the directory every `poll_delay_ms`, counted from the end of the last read."""
        self._armed.set()
        log.info("watching %s for certificate changes (reading it every %d ms)", self.directory, self._poll_delay_ms)
        await self._pass()
        while True:
            await asyncio.sleep(self._poll_delay_ms / 1000)
            await self._pass()

    async def _watch_directory(self) -> None:
        first = True
        async for changes in self._awatch(self.directory, recursive=True):
            if first:
                # The watch is in place now; read once to catch whatever changed before it was.
                first = False
                self._armed.set()
                await self._pass()
                log.info("watching %s for certificate changes", self.directory)
                if not changes:
                    continue
            if not changes:
                if not self.directory.is_dir():
                    return  # removed: go back to waiting for it
                if self._rescan_due():
                    await self._pass()
                continue
            log.debug("%s changed: %s", self.directory, sorted(path for _, path in changes))
            await self._pass()

    async def _wait_for_directory(self) -> None:
        """`cert_dir` does not exist yet: watch the nearest existing parent until it appears."""
        parent = self.directory.parent
        while not parent.is_dir() and parent != parent.parent:
            parent = parent.parent
        log.info("%s does not exist yet; waiting for it to be created", self.directory)
        on_the_way = {str(self.directory), *(str(p) for p in self.directory.parents)}
        # Only the folders leading to cert_dir matter; anything else in the parent (a log file
        # being written, say) must not wake us up.
        async for _changes in self._awatch(parent, recursive=False, only=lambda _change, path: path in on_the_way):
            self._armed.set()
            if self.directory.is_dir():
                return
            if self._rescan_due():
                await self._pass()  # finds nothing, and says so in the last-read metric

    def _awatch(
        self, path: Path, *, recursive: bool, only: Callable[[watchfiles.Change, str], bool] | None = None
    ) -> AsyncGenerator[set[tuple[watchfiles.Change, str]], None]:
        return watchfiles.awatch(
            path,
            watch_filter=only,
            debounce=MAX_BATCH_MS,
            step=EVENT_STEP_MS,
            stop_event=self._stop,
            rust_timeout=ARM_PROBE_MS,
            yield_on_timeout=True,
            recursive=recursive,
        )
