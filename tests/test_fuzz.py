"""Hostile input to the parsers: the only allowed outcomes are a value or our typed error.

`EDGE_FUZZ_EXAMPLES=5000 make test` runs a deeper search than the default.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.certstore.pem import Material
from proxy.certstore.validate import NamePolicy, ValidMaterial, validate_material
from proxy.config import Config, parse_config
from proxy.errors import ConfigError, MaterialError
from tests.support.pki import Issuer

EXAMPLES = int(os.environ.get("EDGE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICY = NamePolicy("edge.example", ("127.0.0.1",))
NOW = datetime.now(UTC)

_root = Issuer("Fuzz Root CA")
_inter = _root.intermediate("Fuzz Issuing CA")
_leaf = _inter.leaf("edge.example", ips=("127.0.0.1",))
GOOD = _leaf.material(_root)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """Bytes flipped, cut, duplicated or spliced: what a bad copy or a half write produces."""
    kind = draw(st.sampled_from(["flip", "cut", "splice", "dup", "insert"]))
    if not data:
        return draw(st.binary(max_size=64))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "cut":
        return data[:at]
    if kind == "splice":
        return data[:at] + draw(st.binary(max_size=40)) + data[at:]
    if kind == "dup":
        return data + data[at:]
    return (
        data[:at] + draw(st.sampled_from([b"-----END CERTIFICATE-----\n", b"-----BEGIN PRIVATE KEY-----\n", b"\r\n", b"\x00"])) + data[at:]
    )


def _outcome(material: Material) -> None:
    try:
        result = validate_material(material, POLICY, NOW)
    except MaterialError as e:
        assert e.problems and all(isinstance(p, str) and p for p in e.problems)
    else:
        assert isinstance(result, ValidMaterial)


@FUZZ
@given(cert=mutated(GOOD.cert_pem), key=st.one_of(st.just(GOOD.key_pem), mutated(GOOD.key_pem)))
def test_mutated_pem_gives_value_or_material_error(cert: bytes, key: bytes) -> None:
    _outcome(Material(cert, key, GOOD.ca_pem))


@FUZZ
@given(ca=mutated(GOOD.ca_pem or b""))
def test_mutated_ca_gives_value_or_material_error(ca: bytes) -> None:
    _outcome(Material(GOOD.cert_pem, GOOD.key_pem, ca))


@FUZZ
@given(cert=st.binary(max_size=300), key=st.binary(max_size=300))
def test_random_bytes_give_material_error(cert: bytes, key: bytes) -> None:
    _outcome(Material(cert, key))


_toml_value = st.recursive(
    st.one_of(st.integers(-5, 70000), st.text(max_size=20), st.booleans(), st.floats(allow_nan=False, allow_infinity=False)),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["name", "listen", "upstream", "x"]), inner, max_size=3),
    max_leaves=6,
)


def _toml(value: object) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)


KEYS = {
    "server": ["workers", "drain_seconds", "connect_timeout", "max_body_bytes", "bogus"],
    "tls": ["cert_dir", "server_name", "ip_addresses", "min_version", "watch", "poll_delay_ms"],
    "admin": ["listen", "token_file"],
}


@FUZZ
@given(
    tables=st.dictionaries(
        st.sampled_from(sorted(KEYS)),
        st.dictionaries(st.sampled_from([key for keys in KEYS.values() for key in keys]), _toml_value, max_size=4),
        max_size=3,
    ),
    listeners=st.lists(
        st.dictionaries(
            st.sampled_from(["name", "protocol", "listen", "upstream", "routes", "redirect_port", "idle_timeout"]),
            _toml_value,
            max_size=6,
        ),
        max_size=3,
    ),
)
def test_config_gives_value_or_config_error(tables: dict[str, dict[str, object]], listeners: list[dict[str, object]]) -> None:
    lines = []
    for section, values in tables.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    for listener in listeners:
        lines.append("[[listeners]]")
        lines += [f"{k} = {_toml(v)}" for k, v in listener.items()]
    try:
        result = parse_config("\n".join(lines), "fuzz.toml")
    except ConfigError as e:
        assert e.problems and all(p.startswith("fuzz.toml") for p in e.problems)
    else:
        assert isinstance(result, Config)
