"""Wiring: the only module that puts the subpackages together.

Builds the store, intake, watcher, listeners and admin server from a Config, starts them in
order, and runs each process's life (signals, drain; `proxy.workers` forks and watches the
`server.workers` processes sharing the ports).
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import os
import signal
import ssl
from collections.abc import Callable, Mapping
from typing import NoReturn

from proxy import extensions, logs, metrics, tlspolicy
from proxy.accesslog import AccessLog
from proxy.certstore.expiry import ExpiryWarnings
from proxy.certstore.service import CertificateService
from proxy.certstore.store import CertStore, Serving, utcnow
from proxy.certstore.watcher import DirectoryWatcher
from proxy.config import Config
from proxy.errors import ConfigError, ProxyError
from proxy.listeners import BaseListener, Listener, bind_open_connections, build_listeners, policy_contexts
from proxy.listeners.base import offered_alpn
from proxy.logwriter import LineWriter
from proxy.tasks import TaskSet
from proxy.tlsmaterial import TlsObjects, tls_preparer
from proxy.workers import Workers

log = logging.getLogger("proxy")


class Edge:
    """One process's edge. `start()` returns once every listener serves and the watcher watches."""

    def __init__(
        self,
        config: Config,
        *,
        worker_index: int = 0,
        policies: Mapping[str, ssl.SSLContext] | None = None,
        expiry: ExpiryWarnings | None = None,
    ) -> None:
        """`expiry`: the expiry warnings' rule (default: a line a day, looked at every hour)."""
        self.config = config
        self.worker_index = worker_index
        self._policies = policies or policy_contexts(config)
        self.store: CertStore[TlsObjects] = CertStore(tls_preparer(config.tls.min_version, config.tls.policy))
        self.service = CertificateService(self.store, config.tls)
        self.listeners: dict[str, BaseListener] = {}
        self.access = access_log(config)
        self.expiry = expiry or ExpiryWarnings()
        self.watcher: DirectoryWatcher | None = None
        self.admin: Listener | None = None
        self.draining = False
        # With `server.workers > 1`, the first process is healthy only while every worker serves.
        self.workers_serving = True
        self.worker_lost = False
        self._started = False
        self._tasks = TaskSet()

    @property
    def healthy(self) -> bool:
        watching = self.watcher is None or self.watcher.watching
        return self._started and watching and self.workers_serving and not self.draining

    def current(self) -> Serving[TlsObjects]:
        return self.store.current

    def _bind_metrics(self) -> None:
        """Gauges read when scraped, bound here once: to this process's store and listeners."""
        metrics.CERT_EXPIRY.set_function(self.service.seconds_to_expiry)
        bind_open_connections(self.listeners)

    async def start(self) -> None:
        if self.access is not None:
            self.access.start()
        await self.service.load_initial()
        if self.worker_index == 0:  # one process says it, not each worker
            self._check_expiry()
            self.store.subscribe(lambda _serving: self._check_expiry())
            self._tasks.spawn(self._watch_expiry(), "expiry warnings")
        self.listeners = build_listeners(self.config, lambda: self.store.current.tls, self._policies, self.access)
        # Never claim what is not enforced: handshakes against the listening contexts themselves.
        await asyncio.to_thread(prove_policy, self.config, self._policies)
        self._bind_metrics()
        try:
            if self.worker_index == 0:
                # First, so that probes get an honest 503 while the rest starts.
                from proxy.admin.server import AdminServer

                self.admin = AdminServer(
                    self.config.admin,
                    self.service,
                    health=lambda: self.healthy,
                    draining=lambda: self.draining,
                    degraded=lambda: self.worker_lost,
                )
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

    def _check_expiry(self) -> None:
        self.expiry.check(self.store.current.snapshot, utcnow())

    async def _watch_expiry(self) -> None:
        while True:
            await asyncio.sleep(self.expiry.check_every.total_seconds())
            self._check_expiry()

    async def reload(self) -> None:
        try:
            await self.service.reload("sighup")
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
        if self.access is not None:
            await asyncio.to_thread(self.access.close)

    def reopen_logs(self) -> None:
        """SIGUSR1: open the access log file anew (logrotate moved it). Every line made from now
        on goes to the new file; each process says so, so that an operator (and a test) sees
        that every worker took the signal."""
        path = self.config.log.access_file
        if self.access is not None and path is not None:
            self.access.reopen()
            log.info("reopening the access log %s", path, extra={"fields": {"event": "access_log_reopened", "path": str(path)}})


def access_log(config: Config) -> AccessLog | None:
    """The access log `[log]` asks for; None when it is off."""
    if config.log.access == "off":
        return None
    return AccessLog(config.log.access, LineWriter(config.log.access_file, fd=1))


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """uvloop when installed; plain asyncio works too, slower."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _alpn(config: Config) -> dict[str, tuple[str, ...]]:
    """The ALPN list of each listener that terminates TLS, by name."""
    offered = {cfg.name: offered_alpn(cfg) for cfg in config.listeners}
    return {name: alpn for name, alpn in offered.items() if alpn is not None}


def prove_policy(config: Config, listening: Mapping[str, ssl.SSLContext]) -> None:
    """Handshakes in memory against each listening context (its sni_callback installed) that
    show `tls.policy` holds there. Raises ConfigError naming what does not hold and the fix."""
    tls = config.tls
    alpn = _alpn(config)
    problems = tlspolicy.prove_all(tls.policy, tls.min_version, [(name, listening[name], alpn[name]) for name in alpn])
    if problems:
        raise ConfigError([f"{config.source}: {problem}" for problem in problems])


def _same(context: ssl.SSLContext) -> ssl.SSLContext:
    return context


def check_policy(config: Config) -> None:
    """`check-config`'s proof of `tls.policy`: the listening contexts `run` would make, serving
    a throwaway self-signed certificate. Raises ConfigError like `prove_policy`."""
    from datetime import UTC, datetime

    from proxy.certstore.selfsigned import generate_self_signed
    from proxy.certstore.store import Snapshot
    from proxy.certstore.validate import NamePolicy, validate_material
    from proxy.tlsmaterial import listening_context

    now = datetime.now(UTC)
    names = NamePolicy(config.tls.server_name, config.tls.ip_addresses)
    snapshot = Snapshot(1, "self-signed", validate_material(generate_self_signed(names, now), names, now), now)
    objects = tls_preparer(config.tls.min_version, config.tls.policy)(snapshot)
    listening = policy_contexts(config)
    for name, alpn in _alpn(config).items():
        listening_context(config.tls.min_version, functools.partial(_same, objects.context(alpn)), alpn, policy=listening[name])
    prove_policy(config, listening)


def run_edge(config: Config) -> int:
    """Run until SIGTERM or SIGINT; return the exit code.

    With `server.workers > 1` the other workers are forked first, from a process that has no
    thread and no event loop yet, after the listening TLS contexts exist: every worker then
    holds the same session-ticket keys, so a returning client resumes its TLS session whichever
    worker the kernel hands it to, as with nginx's workers. Raises ProxyError when this
    process cannot start.
    """
    # Until the loop handles it (serve): logrotate's SIGUSR1 must never end the edge.
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    policies = policy_contexts(config)
    workers = Workers()
    index = workers.fork(config.server.workers - 1)
    if index:
        _run_worker(config, index, policies, workers)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(serve(config, policies=policies, workers=workers))


def log_engine() -> None:
    """One line on which HTTP/1.1 engine serves: the compiled one, or why the pure-Python one."""
    if extensions.engine() == "compiled":
        log.info("HTTP/1.1 engine: compiled")
        old = extensions.stale()
        if old:
            log.warning("the compiled HTTP/1.1 engine is older than its sources (%s): `make engine` rebuilds it", ", ".join(old))
    elif extensions.NO_EXTENSIONS:
        log.info("HTTP/1.1 engine: pure Python (EDGE_PROXY_NO_EXTENSIONS is set)")
    else:
        log.info("HTTP/1.1 engine: pure Python (not compiled at install: no C compiler or no Cython)")


def _run_worker(config: Config, index: int, policies: Mapping[str, ssl.SSLContext], workers: Workers) -> NoReturn:
    """A forked worker's whole life: it never returns into the caller's code."""
    code = 1
    try:
        if not workers.wait_for_first_process():
            os._exit(1)  # the first process could not start, and said why
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            code = runner.run(serve(config, index, policies=policies, workers=workers))
    except ProxyError as e:
        log.error("%s", e)
    except BaseException:
        log.exception("worker %d failed", index)
    finally:
        logging.shutdown()
        os._exit(code)


async def serve(
    config: Config, worker_index: int = 0, *, policies: Mapping[str, ssl.SSLContext] | None = None, workers: Workers | None = None
) -> int:
    """Run the edge on the running loop until SIGTERM or SIGINT, with SIGHUP reloading.
    `workers`: in the first process, the forked siblings it signals and waits for; in a worker,
    its line back to the first process."""
    loop = asyncio.get_running_loop()
    if worker_index == 0:
        log_engine()
    edge = Edge(config, worker_index=worker_index, policies=policies)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if workers is not None and workers.pids:
        edge.workers_serving = False

        def on_workers(all_serving: bool, exited: int | None) -> None:
            edge.workers_serving = all_serving
            if exited is not None:
                edge.worker_lost = True
                if not edge.draining:
                    log.error("worker process %d exited; /healthz answers 503 until the edge is restarted", exited)

        workers.watch_serving(loop, on_workers)

    def on_hangup() -> None:
        edge.reload_soon()
        if workers is not None:
            workers.signal(signal.SIGHUP)

    loop.add_signal_handler(signal.SIGHUP, on_hangup)

    def on_reopen() -> None:
        edge.reopen_logs()
        if workers is not None:
            workers.signal(signal.SIGUSR1)

    loop.add_signal_handler(signal.SIGUSR1, on_reopen)
    logs.start_background()
    try:
        await edge.start()
    except BaseException:
        if workers is not None:
            workers.release(go=False)
            workers.signal(signal.SIGTERM)
            await asyncio.to_thread(workers.wait, config.server.drain_seconds + 5)
        raise
    # Objects made while starting live as long as the process: the cyclic collector need not
    # walk them again on every full collection.
    gc.freeze()
    if workers is not None and workers.pids:
        workers.release()
        # Siblings re-read the directory after every swap here, so all serve the same material.
        edge.store.subscribe(lambda _serving: workers.signal(signal.SIGHUP))
    elif workers is not None and workers.in_worker:
        workers.report_serving()
        workers.watch_first_process(loop, stop)
    await stop.wait()
    log.info("stopping: draining for up to %.0f s", config.server.drain_seconds)
    if workers is not None:
        workers.signal(signal.SIGTERM)
    await edge.stop(config.server.drain_seconds)
    if workers is not None:
        await asyncio.to_thread(workers.wait, config.server.drain_seconds + 5)
    await asyncio.to_thread(logs.stop_background)
    return 0
