"""The admin API as an operator's client sees it: real HTTP on 127.0.0.1, a real store, real files."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest

from proxy.certstore.files import CERT_FILE, KEY_FILE
from tests.support.edge import MISMATCHED_KEY, Admin, new_upload, parse_time, running_admin
from tests.support.pki import NOW, SERVER_NAME
from tests.support.probes import metric

CERTIFICATE_FIELDS = {
    "version",
    "source",
    "subject",
    "issuer",
    "dns_names",
    "ip_addresses",
    "not_before",
    "not_after",
    "fingerprint_sha256",
    "chain_length",
    "loaded_at",
    "last_error",
}
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[Admin]:
    async with running_admin(tmp_path) as admin:
        yield admin


# --- authentication ---------------------------------------------------------------------------


async def test_api_without_token_gets_401_with_no_hint(admin: Admin) -> None:
    for method, path in (("GET", "/api/v1/certificate"), ("POST", "/api/v1/certificate"), ("POST", "/api/v1/reload")):
        async with admin.session.request(method, admin.url(path)) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert await response.json() == {"error": "unauthorized"}


async def test_wrong_token_gets_the_same_401_as_none(admin: Admin) -> None:
    wrong_headers = [
        {"Authorization": "Bearer " + admin.token[:-1]},
        {"Authorization": "Bearer " + admin.token + "x"},
        {"Authorization": "Basic " + admin.token},
        {"Authorization": admin.token},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer é"},
    ]
    for headers in wrong_headers:
        async with admin.session.get(admin.url("/api/v1/certificate"), headers=headers) as response:
            assert response.status == 401, headers
            assert await response.read() == json.dumps({"error": "unauthorized"}).encode()
            assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_right_token_gets_the_certificate(admin: Admin) -> None:
    status, body = await admin.get("/api/v1/certificate", headers=admin.auth)
    assert status == 200
    assert body["source"] == "self-signed"
    status, _ = await admin.get("/api/v1/certificate", headers={"Authorization": f"bearer {admin.token}"})
    assert status == 200, "the auth scheme is case-insensitive (RFC 7235)"


async def test_health_metrics_and_page_need_no_token(admin: Admin) -> None:
    assert await admin.get("/healthz") == (200, {"status": "ok"})
    status, text = await admin.get("/metrics")
    assert status == 200
    assert "edge_certificate_version" in text
    async with admin.session.get(admin.url("/")) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert admin.token not in page
    assert "Certificates" in page


# --- request shape: 413 and 400 ---------------------------------------------------------------


async def test_body_over_one_mebibyte_gets_json_413(admin: Admin) -> None:
    before = await admin.certificate()
    big = json.dumps({"certificate": "x" * (1024 * 1024), "key": ""}).encode()
    status, body = await admin.post("/api/v1/certificate", data=big, headers=admin.auth)
    assert status == 413
    assert body == {"error": "the request body is larger than 1 MiB"}

    async def chunked() -> object:  # no Content-Length: the limit must hold while reading
        for _ in range(5):
            yield b" " * (300 * 1024)

    status, body = await admin.post("/api/v1/certificate", data=chunked(), headers=admin.auth)
    assert status == 413
    assert body == {"error": "the request body is larger than 1 MiB"}
    assert await admin.certificate() == before


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"certificate=abc", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[" * 100_000, "not JSON"),
        (b'["a", "b"]', "must be a JSON object"),
        (b'{"certificate": 1, "key": "k"}', "'certificate' must be a string"),
        (b'{"certificate": "c", "key": null}', "'key' must be a string"),
        (b'{"certificate": "c", "key": "k", "ca": ["x"]}', "'ca' must be a string of PEM text or null"),
        (b'{"certificate": "c"}', "'key' is missing"),
        (b'{"cert": "c", "key": "k"}', "unknown field 'cert'"),
    ],
)
async def test_malformed_body_gets_400_with_a_message(admin: Admin, body: bytes, message: str) -> None:
    headers = {**admin.auth, "Content-Type": "application/json"}
    status, answer = await admin.post("/api/v1/certificate", data=body, headers=headers)
    assert status == 400
    assert set(answer) == {"error"}
    assert message in answer["error"]


async def test_unknown_path_and_wrong_method_answer_json(admin: Admin) -> None:
    assert await admin.get("/api/v1/nothing", headers=admin.auth) == (404, {"error": "no such path"})
    async with admin.session.get(admin.url("/api/v1/reload"), headers=admin.auth) as response:
        assert response.status == 405
        assert "POST" in response.headers["Allow"]
        assert await response.json() == {"error": "method not allowed"}


# --- uploads -----------------------------------------------------------------------------------


async def test_upload_serves_the_new_certificate_as_next_version(admin: Admin) -> None:
    before = await admin.certificate()
    upload = new_upload()
    status, body = await admin.upload(upload.body())
    assert status == 200, body
    assert set(body) == CERTIFICATE_FIELDS
    assert body["version"] == before["version"] + 1
    assert body["source"] == "upload"
    assert body["fingerprint_sha256"] == upload.fingerprint
    assert body["subject"] == f"CN={SERVER_NAME}"
    assert body["issuer"] == "CN=Admin Test Issuing CA"
    assert body["dns_names"] == [SERVER_NAME]
    assert body["ip_addresses"] == ["127.0.0.1"]
    assert body["chain_length"] == 2
    assert body["last_error"] is None
    for field in ("not_before", "not_after", "loaded_at"):
        assert RFC3339_MS.match(body[field]), body[field]
    assert abs((parse_time(body["not_after"]) - upload.leaf.certificate.not_valid_after_utc).total_seconds()) < 1
    assert await admin.certificate() == body
    cert_dir = admin.service.tls.cert_dir
    assert (cert_dir / CERT_FILE).read_bytes() == upload.leaf.cert_pem
    assert (cert_dir / KEY_FILE).stat().st_mode & 0o077 == 0


async def test_ca_may_be_left_out_or_null(admin: Admin) -> None:
    first, second = new_upload(), new_upload()
    status, body = await admin.upload(first.body(ca=False))
    assert (status, body["fingerprint_sha256"]) == (200, first.fingerprint)
    status, body = await admin.upload({**second.body(ca=False), "ca": None})
    assert (status, body["fingerprint_sha256"]) == (200, second.fingerprint)


async def test_uploading_the_serving_material_again_is_no_new_version(admin: Admin) -> None:
    upload = new_upload()
    _, first = await admin.upload(upload.body())
    status, again = await admin.upload(upload.body())
    assert status == 200
    assert again["version"] == first["version"]


async def test_mismatched_key_gets_422_and_nothing_changes(admin: Admin) -> None:
    before = await admin.certificate()
    cert_dir = admin.service.tls.cert_dir
    status, body = await admin.upload(new_upload().with_wrong_key())
    assert status == 422
    assert body == {"error": "the certificate was not accepted; nothing changed", "problems": [MISMATCHED_KEY]}
    after = await admin.certificate()
    assert after["fingerprint_sha256"] == before["fingerprint_sha256"]
    assert after["version"] == before["version"]
    assert after["last_error"]["source"] == "upload"
    assert after["last_error"]["problems"] == [MISMATCHED_KEY]
    assert RFC3339_MS.match(after["last_error"]["at"])
    assert not (cert_dir / CERT_FILE).exists()


async def test_422_names_every_problem(admin: Admin) -> None:
    last_year = NOW - timedelta(days=365)
    expired = new_upload("elsewhere.example", ips=(), not_before=last_year - timedelta(days=90), not_after=last_year)
    status, body = await admin.upload(expired.body())
    assert status == 422
    problems = body["problems"]
    assert any(p.startswith("the certificate expired on ") for p in problems), problems
    assert f"the certificate covers elsewhere.example but not {SERVER_NAME} or 127.0.0.1" in problems


async def test_garbage_pem_gets_422_not_400(admin: Admin) -> None:
    status, body = await admin.upload({"certificate": "hello", "key": "", "ca": ""})
    assert status == 422
    assert "tls.crt holds no PEM block; it should start with -----BEGIN CERTIFICATE-----" in body["problems"]
    assert "tls.key is empty" in body["problems"]


async def test_a_successful_swap_clears_last_error(admin: Admin) -> None:
    await admin.upload(new_upload().with_wrong_key())
    status, body = await admin.upload(new_upload().body())
    assert status == 200
    assert body["last_error"] is None


async def test_unwritable_cert_dir_gets_500_and_nothing_changes(tmp_path: Path) -> None:
    async with running_admin(tmp_path) as admin:
        before = await admin.certificate()
        cert_dir = admin.service.tls.cert_dir
        cert_dir.write_text("a file where the directory should be")  # fails even for root
        status, body = await admin.upload(new_upload().body())
        assert status == 500
        assert body["error"].startswith(f"could not write the certificate into {cert_dir}: ")
        assert body["error"].endswith("; nothing changed")
        assert await admin.certificate() == before


# --- reload ----------------------------------------------------------------------------------


async def test_reload_picks_up_a_drop(admin: Admin) -> None:
    before = await admin.certificate()
    status, body = await admin.post("/api/v1/reload", headers=admin.auth)
    assert (status, body["version"]) == (200, before["version"]), "an empty directory is no change"
    drop = new_upload()
    drop.write_into(admin.service.tls.cert_dir)
    status, body = await admin.post("/api/v1/reload", headers=admin.auth)
    assert status == 200
    assert (body["version"], body["source"], body["fingerprint_sha256"]) == (before["version"] + 1, "directory", drop.fingerprint)


async def test_reload_of_bad_drop_gets_422_and_keeps_serving(admin: Admin) -> None:
    good = new_upload()
    good.write_into(admin.service.tls.cert_dir)
    _, serving = await admin.post("/api/v1/reload", headers=admin.auth)
    (admin.service.tls.cert_dir / KEY_FILE).write_text(new_upload().leaf.key_pem.decode())
    status, body = await admin.post("/api/v1/reload", headers=admin.auth)
    assert status == 422
    assert body["problems"] == [MISMATCHED_KEY]
    assert body["error"].endswith(f"was not accepted; still serving version {serving['version']}")
    after = await admin.certificate()
    assert after["fingerprint_sha256"] == good.fingerprint
    assert after["last_error"]["source"] == "directory"


# --- health and metrics -----------------------------------------------------------------------


async def test_healthz_follows_the_edge(tmp_path: Path) -> None:
    healthy = False
    async with running_admin(tmp_path, health=lambda: healthy) as admin:
        assert await admin.get("/healthz") == (503, {"status": "starting"})
        healthy = True
        assert await admin.get("/healthz") == (200, {"status": "ok"})
        healthy = False
        assert await admin.get("/healthz") == (503, {"status": "draining"})


async def test_metrics_parse_and_move_after_a_swap(admin: Admin) -> None:
    async with admin.session.get(admin.url("/metrics")) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        before = await response.text()
    swaps = metric(before, "edge_certificate_swaps_total", source="upload")
    rejections = metric(before, "edge_certificate_rejections_total", source="upload")
    await admin.upload(new_upload().with_wrong_key())
    _, body = await admin.upload(new_upload().body())
    _, after = await admin.get("/metrics")
    assert metric(after, "edge_certificate_swaps_total", source="upload") == swaps + 1
    assert metric(after, "edge_certificate_rejections_total", source="upload") == rejections + 1
    assert metric(after, "edge_certificate_version") == body["version"]
    expiry = metric(after, "edge_certificate_expiry_seconds")
    assert 89 * 86400 < expiry <= 90 * 86400


async def test_page_allows_only_its_own_script(admin: Admin) -> None:
    async with admin.session.get(admin.url("/")) as response:
        policy = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/]+=*'(;|$)", policy), policy
    assert "connect-src 'self'" in policy
