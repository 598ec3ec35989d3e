"""The JSON access line against hostile values: whatever a client puts in a path or Host header
(quotes, backslashes, control characters, any Unicode), and whatever an engine reports, the line
is one line of JSON that gives every value back exactly."""

from __future__ import annotations

import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.accesslog import AccessLog
from proxy.logwriter import LineWriter

texts = st.text(max_size=40)
maybe_texts = st.none() | texts
statuses = st.none() | st.integers(min_value=100, max_value=999) | st.sampled_from(["OK", "UNAVAILABLE", "CANCELLED"])


@settings(max_examples=300, deadline=None)
@given(
    listener=texts,
    client=texts,
    method=maybe_texts,
    host=maybe_texts,
    path=maybe_texts,
    status=statuses,
    sizes=st.tuples(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40)),
    upstream=maybe_texts,
    tls_version=maybe_texts,
    reason=maybe_texts,
)
def test_every_json_access_line_is_one_json_object_with_the_values_given(
    tmp_path_factory: pytest.TempPathFactory,
    listener: str,
    client: str,
    method: str | None,
    host: str | None,
    path: str | None,
    status: int | str | None,
    sizes: tuple[int, int],
    upstream: str | None,
    tls_version: str | None,
    reason: str | None,
) -> None:
    target = tmp_path_factory.mktemp("access") / "access.log"
    access = AccessLog("json", LineWriter(target)).for_listener(listener)
    access.request("HTTP/1.1", client, tls_version, method, host, path, status, sizes[0], sizes[1], time.monotonic(), upstream, reason)
    text = target.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    line = json.loads(text)
    expected = {
        "listener": listener,
        "client": client,
        "protocol": "HTTP/1.1",
        "method": method,
        "host": host,
        "path": path,
        "status": status,
        "bytes_in": sizes[0],
        "bytes_out": sizes[1],
        "upstream": upstream,
        "tls_version": tls_version,
    }
    assert {key: line[key] for key in expected} == expected
    assert line.get("reason") == reason and ("reason" in line) == (reason is not None)
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["ts"].endswith("Z")


connections = st.tuples(texts, maybe_texts, st.sampled_from(["HTTP/1.1", "HTTP/2", "gRPC"]))


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.tuples(connections, maybe_texts, statuses), min_size=1, max_size=8))
def test_lines_of_one_listener_each_name_their_own_connection(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[tuple[str, str | None, str], str | None, int | str | None]]
) -> None:
    """A listener's lines come from many connections, interleaved: each line names the client,
    TLS version and protocol of the request it records, never those of the line before."""
    target = tmp_path_factory.mktemp("access") / "access.log"
    access = AccessLog("json", LineWriter(target)).for_listener("https")
    began = time.monotonic()
    for (client, tls_version, protocol), path, status in lines:
        access.request(protocol, client, tls_version, "GET", "edge.example", path, status, 1, 2, began, "127.0.0.1:8080", None)
    written = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(line["client"], line["tls_version"], line["protocol"], line["path"], line["status"]) for line in written] == [
        (client, tls_version, protocol, path, status) for (client, tls_version, protocol), path, status in lines
    ]
