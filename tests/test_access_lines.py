"""The JSON access line against hostile values: whatever a client puts in a path or Host header
(quotes, backslashes, control characters, any Unicode), and whatever an engine reports, the line
is one line of JSON that gives every value back exactly."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import extensions
from proxy.accesslog import AccessLog, new_entry
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


connections = st.tuples(st.sampled_from(["https", "api"]), texts, maybe_texts, st.sampled_from(["HTTP/1.1", "HTTP/2", "gRPC"]))


@settings(max_examples=100, deadline=None)
@given(lines=st.lists(st.tuples(connections, maybe_texts, statuses), min_size=1, max_size=8))
def test_lines_of_one_log_each_name_their_own_listener_and_connection(
    tmp_path_factory: pytest.TempPathFactory, lines: list[tuple[tuple[str, str, str | None, str], str | None, int | str | None]]
) -> None:
    """A log's lines come from many listeners and connections, interleaved: each line names the
    listener, client, TLS version and protocol of the request it records, never those of the line
    before."""
    target = tmp_path_factory.mktemp("access") / "access.log"
    log = AccessLog("json", LineWriter(target))
    listeners = {name: log.for_listener(name) for name in ("https", "api")}
    began = time.monotonic()
    for (listener, client, tls_version, protocol), path, status in lines:
        listeners[listener].request(protocol, client, tls_version, "GET", "edge.example", path, status, 1, 2, began, "127.0.0.1:8080", None)
    keys = ("listener", "client", "tls_version", "protocol", "path", "status")
    written = [tuple(json.loads(line)[key] for key in keys) for line in target.read_text().splitlines()]
    assert written == [(*connection, path, status) for connection, path, status in lines]


@pytest.mark.skipif(extensions.NO_EXTENSIONS, reason="the pure-Python engine's objects are all tracked")
def test_entries_waiting_for_the_writer_are_outside_the_garbage_collector(tmp_path: Path) -> None:
    """Under load hundreds of entries wait for the writer's next batch: compiled, the collector
    never walks them (they hold only strings and numbers)."""
    access = AccessLog("json", LineWriter(tmp_path / "access.log")).for_listener("https")
    entry = new_entry(access, "127.0.0.1", "TLSv1.3", "GET", "edge.example", "/", time.monotonic(), 100, "127.0.0.1:8080")
    assert not gc.is_tracked(entry)
