"""Fixtures shared by every test module: the names a test certificate must cover, CAs, a test
PKI with a store serving its leaf and a client trusting it, a real aiohttp upstream, the demo's
upstreams, and each listener kind that relays gRPC. A test module may define its own fixture of the same name to replace one."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest

from proxy.certstore.store import CertStore
from proxy.certstore.validate import NamePolicy
from proxy.demo import DemoUpstreams
from proxy.extensions import stale
from proxy.tlsmaterial import TlsObjects
from tests.support.browser import browser_page
from tests.support.grpc_echo import EchoUpstream, running_upstream
from tests.support.listeners import GRPC_SERVING, GrpcServing, new_store
from tests.support.pki import POLICY, SERVER_IP, SERVER_NAME, Issuer, Leaf, Pki, ca_and_leaf
from tests.support.web import Upstream, upstream


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a compiled engine older than its sources: it would test other code."""
    old = stale()
    if old:
        pytest.exit(f"compiled engine older than its sources ({', '.join(old)}): run `make engine`", returncode=2)


@pytest.fixture
def policy() -> NamePolicy:
    return POLICY


@pytest.fixture(scope="session")
def root() -> Issuer:
    return Issuer("Example Root CA")


@pytest.fixture(scope="session")
def issuing(root: Issuer) -> Issuer:
    return root.intermediate("Example Issuing CA")


@pytest.fixture
def good_pair() -> tuple[Issuer, Leaf]:
    return ca_and_leaf(SERVER_NAME, ips=(SERVER_IP,))


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def client_tls(pki: Pki) -> ssl.SSLContext:
    return pki.client_context(alpn=None)


@pytest.fixture
async def store(pki: Pki) -> CertStore[TlsObjects]:
    return await new_store(pki)


@pytest.fixture
async def up() -> AsyncIterator[Upstream]:
    async with upstream() as server:
        yield server


@pytest.fixture
async def grpc_up() -> AsyncIterator[EchoUpstream]:
    """A real grpcio echo upstream on 127.0.0.1."""
    async with running_upstream() as echo:
        yield echo


@pytest.fixture
async def upstreams() -> AsyncIterator[DemoUpstreams]:
    """The demo's HTTP and gRPC upstreams on 127.0.0.1, on ports of their own."""
    upstreams = DemoUpstreams(http_port=0, grpc_port=0)
    await upstreams.start()
    try:
        yield upstreams
    finally:
        await upstreams.stop()


@pytest.fixture(params=sorted(GRPC_SERVING))
def serving(request: pytest.FixtureRequest) -> GrpcServing:
    """Each listener kind that relays gRPC: a grpc listener, and an https listener with a
    `grpc_upstream` (one port for browsers, API and gRPC)."""
    return GRPC_SERVING[request.param]


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A page in a real headless Chromium."""
    async with browser_page() as opened:
        yield opened
