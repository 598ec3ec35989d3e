"""The JSON shapes of the admin API: times, field names, upload bodies."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from proxy.admin.views import material_from_json, rfc3339


def test_times_are_utc_with_milliseconds_and_z() -> None:
    assert rfc3339(datetime(2026, 11, 28, 17, 0, 0, 123456, tzinfo=UTC)) == "2026-11-28T17:00:00.123Z"
    assert rfc3339(datetime(2026, 11, 28, 17, 0, tzinfo=UTC)) == "2026-11-28T17:00:00.000Z"
    assert rfc3339(datetime(2026, 11, 28, 18, 0, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-28T17:00:00.000Z"
    with pytest.raises(ValueError):
        rfc3339(datetime(2026, 11, 28))


def test_upload_body_becomes_material() -> None:
    material = material_from_json(b'{"certificate": "C", "key": "K", "ca": "A"}')
    assert (material.cert_pem, material.key_pem, material.ca_pem) == (b"C", b"K", b"A")


@pytest.mark.parametrize("ca", ['"ca": null', '"ca": ""', '"ca": "  \\n"', None])
def test_absent_null_or_blank_ca_means_no_ca(ca: str | None) -> None:
    extra = f", {ca}" if ca else ""
    assert material_from_json(f'{{"certificate": "C", "key": "K"{extra}}}'.encode()).ca_pem is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "the body is not JSON"),
        (b"null", 'must be a JSON object {"certificate": ..., "key": ..., "ca": ...}, not null'),
        (b'"text"', "not a string"),
        (b'{"certificate": true, "key": "K"}', "the field 'certificate' must be a string of PEM text, not true or false"),
        (b'{"certificate": "C", "key": 1.5}', "the field 'key' must be a string of PEM text, not a number"),
        (b'{"certificate": "C", "key": "K", "ca": {}}', "not an object"),
        (b'{"key": "K"}', "the field 'certificate' is missing"),
        (b'{"certificate": "C", "key": "K", "chain": "", "ca2": ""}', "unknown field 'ca2', 'chain'"),
    ],
)
def test_malformed_upload_bodies_are_refused_with_a_reason(body: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=None) as caught:
        material_from_json(body)
    assert message in str(caught.value)
