"""The admin token file: created once, private, reused; and the constant-time header check."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from proxy.admin.token import TOKEN_BYTES, bearer_matches, load_or_create_token
from proxy.errors import ListenerError
from tests.support.edge import edge_settings, running_admin


def test_missing_token_file_is_created_private_with_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "state" / "admin.token"
    token = load_or_create_token(path)
    assert len(token) >= 43, "32 random bytes, URL-safe base64"
    assert path.read_text() == token + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert list(path.parent.iterdir()) == [path], "no temp file is left behind"


def test_existing_token_is_reused(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    first = load_or_create_token(path)
    assert load_or_create_token(path) == first
    path.write_text("  operator-chosen-token \n")
    assert load_or_create_token(path) == "operator-chosen-token"


def test_blank_token_file_gets_a_new_token(tmp_path: Path) -> None:
    path = tmp_path / "admin.token"
    path.write_text("\n")
    token = load_or_create_token(path)
    assert len(token) >= TOKEN_BYTES
    assert path.read_text().strip() == token


def test_tokens_differ_between_installations(tmp_path: Path) -> None:
    assert load_or_create_token(tmp_path / "a") != load_or_create_token(tmp_path / "b")


def test_bearer_header_must_match_exactly() -> None:
    assert bearer_matches("Bearer s3cret", "s3cret")
    assert bearer_matches("BEARER  s3cret ", "s3cret")
    for header in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cretX", "Basic s3cret", "s3cret", "Bearer \udcff"):
        assert not bearer_matches(header, "s3cret"), header


async def test_server_keeps_its_token_across_restarts(tmp_path: Path) -> None:
    async with running_admin(tmp_path) as admin:
        first = admin.token
    async with running_admin(tmp_path) as admin:
        assert admin.token == first
        assert (await admin.get("/api/v1/certificate", headers=admin.auth))[0] == 200


async def test_unusable_token_file_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    from proxy.admin.server import AdminServer

    path = tmp_path / "admin.token"
    path.mkdir()  # a directory where the file should be
    async with running_admin(tmp_path / "edge") as admin:
        config = edge_settings(tmp_path, admin={"token_file": str(path)}).admin
        server = AdminServer(config, admin.service, health=lambda: True)
        with pytest.raises(ListenerError, match=f"admin: cannot use the token file {path}"):
            await server.start()


async def test_busy_port_stops_the_start_with_a_clear_error(tmp_path: Path) -> None:
    from proxy.admin.server import AdminServer

    async with running_admin(tmp_path) as admin:
        config = edge_settings(tmp_path, admin_port=admin.server.port, admin={"token_file": "other.token"}).admin
        server = AdminServer(config, admin.service, health=lambda: True)
        with pytest.raises(ListenerError, match=f"admin: cannot listen on 127.0.0.1:{admin.server.port}"):
            await server.start()
        assert os.path.exists(tmp_path / "other.token")
