"""Fixtures shared by the HTTPS listener tests: a test PKI, a store serving its certificate,
a client context trusting it and a real aiohttp upstream. A test module may define its own
fixture of the same name to replace one."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator

import pytest

from proxy.certstore.store import CertStore
from proxy.tlsmaterial import TlsObjects
from tests.https_helpers import Pki, Upstream, new_store, upstream


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture
def client_tls(pki: Pki) -> ssl.SSLContext:
    return pki.client_context()


@pytest.fixture
async def store(pki: Pki) -> CertStore[TlsObjects]:
    return await new_store(pki)


@pytest.fixture
async def up() -> AsyncIterator[Upstream]:
    async with upstream() as server:
        yield server
