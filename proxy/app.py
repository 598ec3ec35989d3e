"""Wiring: the only module that puts the subpackages together.

Builds the store, intake, watcher, listeners and admin server from a Config, starts them in
order, and runs the process model (signals, drain, `server.workers` processes sharing ports).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from proxy.certstore.service import CertificateService
from proxy.certstore.store import CertStore, Serving
from proxy.certstore.watcher import DirectoryWatcher
from proxy.config import Config
from proxy.tasks import TaskSet
from proxy.tlsmaterial import TlsObjects, tls_preparer

log = logging.getLogger("proxy")


class Listener(Protocol):
    async def start(self) -> None: ...
    async def stop(self, drain_seconds: float) -> None: ...
    @property
    def port(self) -> int: ...


class Edge:
    """One process's edge. `start()` returns once every listener serves and the watcher watches."""

    def __init__(self, config: Config, *, worker_index: int = 0) -> None:
        self.config = config
        self.worker_index = worker_index
        self.store: CertStore[TlsObjects] = CertStore(tls_preparer(config.tls.min_version))
        self.service = CertificateService(self.store, config.tls)
        self.listeners: dict[str, Listener] = {}
        self.watcher: DirectoryWatcher | None = None
        self.admin: Listener | None = None
        self.draining = False
        self._started = False
        self._tasks = TaskSet()

    @property
    def healthy(self) -> bool:
        watching = self.watcher is None or self.watcher.watching
        return self._started and watching and not self.draining

    def current(self) -> Serving[TlsObjects]:
        return self.store.current

    def _build_listeners(self) -> None:
        from proxy.grpcedge.listener import GrpcListener
        from proxy.grpcedge.relay import RelayListener
        from proxy.http.listener import HttpsListener
        from proxy.http.redirect import RedirectListener

        reuse = self.config.server.workers > 1
        min_version = self.config.tls.min_version
        for cfg in self.config.listeners:
            listener: Listener
            if cfg.protocol == "https":
                listener = HttpsListener(cfg, min_version, lambda: self.store.current.tls.ssl_context, reuse_port=reuse)
            elif cfg.protocol == "grpc" and cfg.grpc_mode == "relay":
                listener = RelayListener(cfg, min_version, self.current, reuse_port=reuse)
            elif cfg.protocol == "grpc":
                listener = GrpcListener(cfg, min_version, self.current, reuse_port=reuse)
            else:
                listener = RedirectListener(cfg, reuse_port=reuse)
            self.listeners[cfg.name] = listener

    async def start(self) -> None:
        await self.service.load_initial()
        self._build_listeners()
        try:
            if self.worker_index == 0:
                # First, so that probes get an honest 503 while the rest starts.
                from proxy.admin.server import AdminServer

                self.admin = AdminServer(self.config.admin, self.service, health=lambda: self.healthy, draining=lambda: self.draining)
                await self.admin.start()
            for listener in self.listeners.values():
                await listener.start()
            tls = self.config.tls
            if tls.watch != "off":
                self.watcher = DirectoryWatcher(
                    tls.cert_dir, self.service.directory_changed, polling=tls.watch == "poll", poll_delay_ms=tls.poll_delay_ms
                )
                await self.watcher.start()
        except BaseException:
            await self.stop(0)
            raise
        self._started = True
        for cfg in self.config.listeners:
            log.info("%s (%s) serving on %s:%d", cfg.name, cfg.protocol, cfg.listen.host, self.listeners[cfg.name].port)

    async def reload(self) -> None:
        try:
            await self.service.reload()
        except Exception as e:  # noqa: BLE001 - recorded and logged by the service; a reload never takes anything down
            log.debug("reload refused: %s", e)

    def reload_soon(self) -> None:
        self._tasks.spawn(self.reload(), "reload")

    async def stop(self, drain_seconds: float) -> None:
        """Stop accepting at once, let in-flight work finish for up to `drain_seconds`."""
        self.draining = True
        if self.watcher is not None:
            await self.watcher.stop()
        await asyncio.gather(*(listener.stop(drain_seconds) for listener in self.listeners.values()), return_exceptions=True)
        if self.admin is not None:
            await self.admin.stop(0)
        await self._tasks.close()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed; plain asyncio works too, slower."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_edge(config: Config, *, config_path: Path | None, worker_index: int = 0) -> int:
    """Run until SIGTERM or SIGINT; return the exit code."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve(config, config_path, worker_index))


async def serve(config: Config, config_path: Path | None = None, worker_index: int = 0) -> int:
    """Run the edge on the running loop until SIGTERM or SIGINT, with SIGHUP reloading."""
    loop = asyncio.get_running_loop()
    edge = Edge(config, worker_index=worker_index)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    workers = _Workers(config, config_path) if worker_index == 0 and config.server.workers > 1 else None

    def on_hangup() -> None:
        edge.reload_soon()
        if workers is not None:
            workers.signal(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)
    await edge.start()
    if workers is not None:
        workers.start()
        # Siblings re-read the directory after every swap here, so all serve the same material.
        edge.store.subscribe(lambda _serving: workers.signal(signal.SIGHUP))
    await stop.wait()
    log.info("stopping: draining for up to %.0f s", config.server.drain_seconds)
    if workers is not None:
        workers.signal(signal.SIGTERM)
    await edge.stop(config.server.drain_seconds)
    if workers is not None:
        await asyncio.to_thread(workers.wait, config.server.drain_seconds + 5)
    return 0


class _Workers:
    """The extra processes of `server.workers`: the same program, sharing ports via SO_REUSEPORT."""

    def __init__(self, config: Config, config_path: Path | None) -> None:
        self.count = config.server.workers - 1
        self.config_path = config_path
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for index in range(1, self.count + 1):
            argv = [sys.executable, "-m", "proxy", "run", "--worker-index", str(index)]
            if self.config_path is not None:
                argv += ["--config", str(self.config_path)]
            self.processes.append(subprocess.Popen(argv, cwd=os.getcwd()))

    def signal(self, sig: signal.Signals) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(sig)

    def wait(self, timeout: float) -> None:
        for process in self.processes:
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
