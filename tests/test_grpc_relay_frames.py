"""The relay's view of HTTP/2: frame headers followed across any split of the bytes, insertion
points that respect header blocks, stream bookkeeping, and hostile bytes that never raise."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given
from hypothesis import strategies as st

from proxy.h2relay.frames import (
    CONTINUATION,
    DATA,
    END_HEADERS,
    END_STREAM,
    GOAWAY,
    HEADERS,
    MAX_STREAM_ID,
    RST_STREAM,
    SETTINGS,
    FrameScanner,
    Streams,
    goaway_frame,
    trailers_only_frame,
    unavailable_block,
)

Frame = tuple[int, int, int, bytes]  # type, flags, stream, payload


def encode(frames: list[Frame]) -> bytes:
    return b"".join(struct.pack(">I", len(p))[1:] + struct.pack(">BBI", kind, flags, stream) + p for kind, flags, stream, p in frames)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)] or [b""]


frames_strategy = st.lists(
    st.tuples(
        st.sampled_from([DATA, HEADERS, RST_STREAM, SETTINGS, GOAWAY, CONTINUATION, 0xAB]),
        st.integers(0, 255),
        st.integers(0, MAX_STREAM_ID),
        st.binary(max_size=40),
    ),
    max_size=20,
)
cuts_strategy = st.lists(st.integers(0, 10_000), max_size=30)


@given(frames_strategy, cuts_strategy)
def test_each_frame_header_is_seen_once_in_order_however_the_bytes_are_split(frames: list[Frame], cuts: list[int]) -> None:
    seen: list[tuple[int, int, int]] = []
    scanner = FrameScanner(lambda kind, flags, stream: seen.append((kind, flags, stream)))
    for piece in split(encode(frames), cuts):
        scanner.feed(piece)
    assert seen == [(kind, flags, stream) for kind, flags, stream, _ in frames]
    assert scanner.at_boundary == (bool(frames) and not scanner.in_header_block)


def insertion_points(frames: list[Frame]) -> list[int]:
    """Offsets where a frame may go: a frame start (or the end) after the first frame, outside
    a header block."""
    points, offset, in_block = [], 0, False
    for i, (kind, flags, _, payload) in enumerate(frames):
        if i > 0 and not in_block:
            points.append(offset)
        if kind in (HEADERS, CONTINUATION):
            in_block = not flags & END_HEADERS
        offset += 9 + len(payload)
    if frames and not in_block:
        points.append(offset)
    return points


@given(frames_strategy, cuts_strategy)
def test_insertion_point_is_the_first_frame_start_outside_a_header_block(frames: list[Frame], cuts: list[int]) -> None:
    allowed = insertion_points(frames)
    scanner = FrameScanner(lambda kind, flags, stream: None)
    offset = 0
    for piece in split(encode(frames), cuts):
        found = scanner.feed(piece, want_boundary=True)
        expected = [p - offset for p in allowed if offset <= p <= offset + len(piece)]
        assert found == (min(expected) if expected else -1)
        offset += len(piece)


@given(st.binary(max_size=2000), cuts_strategy, st.integers(0, 30))
def test_any_bytes_are_followed_without_error(data: bytes, cuts: list[int], skip: int) -> None:
    streams = Streams()
    up, down = FrameScanner(streams.from_client, skip), FrameScanner(streams.from_server)
    for piece in split(data, cuts):
        up.feed(piece, want_boundary=True)
        down.feed(piece, want_boundary=True)
    assert len(streams.open) <= len(data) // 9 + 1


def test_stream_closes_when_both_sides_end_it() -> None:
    streams = Streams()
    streams.from_client(HEADERS, END_HEADERS, 1)
    streams.from_client(DATA, END_STREAM, 1)
    assert 1 in streams.open
    streams.from_server(HEADERS, END_HEADERS, 1)
    streams.from_server(DATA, 0, 1)
    streams.from_server(HEADERS, END_HEADERS | END_STREAM, 1)  # trailers
    assert not streams.open


def test_stream_closes_on_a_reset_from_either_side() -> None:
    streams = Streams()
    streams.from_client(HEADERS, END_HEADERS, 1)
    streams.from_client(HEADERS, END_HEADERS, 3)
    streams.from_client(RST_STREAM, 0, 1)  # a client cancel
    streams.from_server(RST_STREAM, 0, 3)
    assert not streams.open


def test_frames_for_a_closed_stream_do_not_reopen_it() -> None:
    streams = Streams()
    streams.from_client(HEADERS, END_HEADERS | END_STREAM, 1)
    streams.from_server(HEADERS, END_HEADERS | END_STREAM, 1)  # a trailers-only answer
    streams.from_client(HEADERS, END_HEADERS, 1)
    streams.from_client(DATA, END_STREAM, 1)
    streams.from_server(DATA, END_STREAM, 1)
    assert not streams.open
    assert streams.last_client_stream == 1


def test_client_settings_and_server_goaway_are_noted() -> None:
    streams = Streams()
    streams.from_client(SETTINGS, 0, 0)
    streams.from_client(SETTINGS, 1, 0)  # an acknowledgement: nothing to answer
    streams.from_server(GOAWAY, 0, 0)
    assert streams.client_settings == 1
    assert streams.server_goaway


def test_frames_the_edge_writes_are_well_formed() -> None:
    seen: list[tuple[int, int, int]] = []
    scanner = FrameScanner(lambda kind, flags, stream: seen.append((kind, flags, stream)))
    block = unavailable_block("edge-proxy: down")
    data = goaway_frame() + trailers_only_frame(7, block) + goaway_frame(7)
    assert scanner.feed(data, want_boundary=True) == len(goaway_frame())
    assert scanner.at_boundary
    assert seen == [(GOAWAY, 0, 0), (HEADERS, END_STREAM | END_HEADERS, 7), (GOAWAY, 0, 0)]
    assert goaway_frame()[9:] == struct.pack(">II", MAX_STREAM_ID, 0)
    assert goaway_frame(7)[9:13] == struct.pack(">I", 7)
    assert b"grpc-status\x0214" in block
    assert block.endswith(b"grpc-message\x10edge-proxy: down")
