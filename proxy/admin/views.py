"""The admin API's JSON shapes (README: "Admin API and page"): request bodies in, answers out.

Pure: no HTTP, no store access, no clock. Field names and time format are part of the product
contract; change them only with the README.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from proxy.certstore.pem import Material
from proxy.certstore.store import Rejection, Snapshot
from proxy.certstore.validate import san_names


def rfc3339(moment: datetime) -> str:
    """`2026-11-28T17:00:00.123Z`: UTC, milliseconds, `Z`."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined UTC time")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def certificate_view(snapshot: Snapshot, last_error: Rejection | None) -> dict[str, Any]:
    """The serving certificate as `GET /api/v1/certificate` answers it."""
    leaf = snapshot.material.leaf
    dns_names, ip_addresses = san_names(leaf)
    return {
        "version": snapshot.version,
        "source": snapshot.source,
        "subject": leaf.subject.rfc4514_string(),
        "issuer": leaf.issuer.rfc4514_string(),
        "dns_names": dns_names,
        "ip_addresses": ip_addresses,
        "not_before": rfc3339(leaf.not_valid_before_utc),
        "not_after": rfc3339(leaf.not_valid_after_utc),
        "fingerprint_sha256": snapshot.fingerprint,
        "chain_length": 1 + len(snapshot.material.chain),
        "loaded_at": rfc3339(snapshot.loaded_at),
        "last_error": rejection_view(last_error) if last_error is not None else None,
    }


def rejection_view(rejection: Rejection) -> dict[str, Any]:
    return {"at": rfc3339(rejection.at), "source": rejection.source, "problems": list(rejection.problems)}


def problems_view(error: str, problems: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """The 422 body: a summary and every reason the material was refused."""
    return {"error": error, "problems": list(problems)}


UPLOAD_FIELDS = ("certificate", "key", "ca")


def material_from_json(body: bytes) -> Material:
    """An upload body `{"certificate": PEM, "key": PEM, "ca": PEM or null}` as Material.

    Raises ValueError with a message for the client when the body is not JSON or a field is
    missing, unknown or of the wrong type. The PEM itself is checked later, by validation.
    """
    try:
        document = json.loads(body)
    except RecursionError as e:  # "[[[[..." nests deeper than the parser recurses
        raise ValueError("the body is not JSON: it nests too deeply") from e
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"the body is not JSON: {e}") from e
    if not isinstance(document, dict):
        shape = '{"certificate": ..., "key": ..., "ca": ...}'
        raise ValueError(f"the body must be a JSON object {shape}, not {_json_type(document)}")
    unknown = sorted(set(document) - set(UPLOAD_FIELDS))
    if unknown:
        raise ValueError(f"unknown field {', '.join(map(repr, unknown))}; the fields are certificate, key and ca")
    for name in ("certificate", "key"):
        if name not in document:
            raise ValueError(f"the field {name!r} is missing")
        if not isinstance(document[name], str):
            raise ValueError(f"the field {name!r} must be a string of PEM text, not {_json_type(document[name])}")
    ca = document.get("ca")
    if ca is not None and not isinstance(ca, str):
        raise ValueError(f"the field 'ca' must be a string of PEM text or null, not {_json_type(ca)}")
    return Material(
        cert_pem=_pem_bytes(document["certificate"]),
        key_pem=_pem_bytes(document["key"]),
        # A blank CA field (the page's empty textarea) means "no CA", exactly like null.
        ca_pem=_pem_bytes(ca) if ca is not None and ca.strip() else None,
    )


def _pem_bytes(text: str) -> bytes:
    # Lone surrogates cannot come from a PEM file; keep them as bytes PEM parsing will refuse.
    return text.encode("utf-8", "surrogatepass")


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "true or false", type(None): "null"}
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
