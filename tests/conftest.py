"""Shared fixtures: the names a test certificate must cover and a certificate factory."""

from __future__ import annotations

import pytest

from proxy.certstore.validate import NamePolicy
from tests.certs import Issuer, Leaf, ca_and_leaf

pytest_plugins = ["tests.https_fixtures"]

SERVER_NAME = "edge.example"
SERVER_IP = "127.0.0.1"


@pytest.fixture
def policy() -> NamePolicy:
    return NamePolicy(SERVER_NAME, (SERVER_IP,))


@pytest.fixture(scope="session")
def root() -> Issuer:
    return Issuer("Example Root CA")


@pytest.fixture(scope="session")
def issuing(root: Issuer) -> Issuer:
    return root.intermediate("Example Issuing CA")


@pytest.fixture
def good_pair() -> tuple[Issuer, Leaf]:
    return ca_and_leaf(SERVER_NAME, ips=(SERVER_IP,))
