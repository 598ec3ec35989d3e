"""Watching `cert_dir` with watchfiles: any change in the directory means "re-read everything".

Watches the directory (never a file or a symlink, which a replace or a Kubernetes `..data`
swap would orphan), waits for it to settle, then calls the intake. Knows nothing about
validation or TLS; content hashes in the store decide whether anything changed.
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

SETTLE_MS = 200  # INTERFACE 3: the directory is settled after about 200 ms without changes
MAX_BATCH_MS = 1600  # a directory that never stops changing is still read this often
ARM_PROBE_MS = 250  # how soon the first (empty) batch proves the watch is in place
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
    ) -> None:
        self.directory = directory
        self._on_change = on_change
        self._polling = polling
        self._poll_delay_ms = poll_delay_ms
        self._stop = asyncio.Event()
        self._armed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

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
                if self.directory.is_dir():
                    await self._watch_directory()
                else:
                    await self._wait_for_directory()
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the directory vanished under the watch, or the OS refused it
                log.warning("watching %s failed (%s); watching again in %.0f s", self.directory, e, RESTART_DELAY)
                await asyncio.sleep(RESTART_DELAY)

    async def _watch_directory(self) -> None:
        first = True
        async for changes in self._awatch(self.directory, recursive=True):
            if first:
                # The watch is in place now; read once to catch whatever changed before it was.
                first = False
                self._armed.set()
                await self._on_change()
                log.info("watching %s for certificate changes%s", self.directory, " (polling)" if self._polling else "")
                if not changes:
                    continue
            if not changes:
                if not self.directory.is_dir():
                    return  # removed: go back to waiting for it
                continue
            log.debug("%s changed: %s", self.directory, sorted(path for _, path in changes))
            await self._on_change()

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

    def _awatch(
        self, path: Path, *, recursive: bool, only: Callable[[watchfiles.Change, str], bool] | None = None
    ) -> AsyncGenerator[set[tuple[watchfiles.Change, str]], None]:
        return watchfiles.awatch(
            path,
            watch_filter=only,
            debounce=MAX_BATCH_MS,
            step=SETTLE_MS,
            stop_event=self._stop,
            rust_timeout=ARM_PROBE_MS,
            yield_on_timeout=True,
            force_polling=self._polling,
            poll_delay_ms=self._poll_delay_ms,
            recursive=recursive,
        )
