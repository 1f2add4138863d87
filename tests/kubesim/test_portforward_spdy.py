"""The SPDY/3.1 codec used for kubectl's port-forward (pure): frames, header compression."""

from __future__ import annotations

import struct
import zlib

import pytest

from kubesim.streams import spdy


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options") and spdy.DICTIONARY.endswith(b"enq=0.")


def test_syn_stream_roundtrip_with_one_context_per_direction() -> None:
    client = spdy.HeaderCompressor()
    parser = spdy.Parser()
    wire = b""
    for sid, stype in ((1, "error"), (3, "data"), (5, "error"), (7, "data")):
        wire += spdy.encode_syn_stream(
            client, sid, {"streamtype": stype, "port": "8888", "requestID": str(sid // 4)}
        )
    # Frames arrive split at arbitrary points (WebSocket message boundaries mean nothing).
    frames: list[spdy.Frame] = []
    for i in range(0, len(wire), 7):
        frames += parser.feed(wire[i : i + 7])
    assert [f.stream_id for f in frames] == [1, 3, 5, 7]
    assert all(isinstance(f, spdy.ControlFrame) and f.type == spdy.SYN_STREAM for f in frames)
    assert [f.header("streamtype") for f in frames if isinstance(f, spdy.ControlFrame)] == [
        "error",
        "data",
    ] * 2
    assert frames[3].header("requestid") == "1"  # names are lower-cased


def test_a_fresh_context_per_frame_breaks_the_peer() -> None:
    parser = spdy.Parser()
    parser.feed(spdy.encode_syn_stream(spdy.HeaderCompressor(), 1, {"a": "b"}))
    with pytest.raises(spdy.SpdyError):
        parser.feed(spdy.encode_syn_stream(spdy.HeaderCompressor(), 3, {"a": "b"}))


@pytest.mark.parametrize(
    "encoded, expected",
    [
        (spdy.encode_data(3, b"hello"), spdy.DataFrame(3, 0, b"hello")),
        (spdy.encode_data(3, b"", fin=True), spdy.DataFrame(3, spdy.FLAG_FIN, b"")),
        (spdy.encode_ping(7), spdy.ControlFrame(spdy.PING, 0, value=7)),
        (
            spdy.encode_rst(5, spdy.RST_CANCEL),
            spdy.ControlFrame(spdy.RST_STREAM, 0, 5, value=spdy.RST_CANCEL),
        ),
        (spdy.encode_goaway(9, 0), spdy.ControlFrame(spdy.GOAWAY, 0, 9, value=0)),
        (spdy.encode_window_update(1, 1000), spdy.ControlFrame(spdy.WINDOW_UPDATE, 0, 1, value=1000)),
    ],
)
def test_frame_roundtrip(encoded: bytes, expected: spdy.Frame) -> None:
    assert spdy.Parser().feed(encoded) == [expected]


def test_syn_reply_decodes_with_headers() -> None:
    frame = spdy.Parser().feed(
        spdy.encode_syn_reply(spdy.HeaderCompressor(), 3, {"x": ["a", "b"]}, fin=True)
    )[0]
    assert isinstance(frame, spdy.ControlFrame) and frame.type == spdy.SYN_REPLY and frame.fin
    assert frame.headers == {"x": ["a", "b"]}


def test_settings_and_unknown_frames_are_passed_up_undecoded() -> None:
    settings = struct.pack(">HHI", 0x8003, spdy.SETTINGS, 12) + struct.pack(">III", 1, 0x01000007, 1000)
    frame = spdy.Parser().feed(settings)[0]
    assert isinstance(frame, spdy.ControlFrame) and frame.type == spdy.SETTINGS


def test_wrong_version_and_short_frames_are_errors() -> None:
    with pytest.raises(spdy.SpdyError, match="version"):
        spdy.Parser().feed(struct.pack(">HHI", 0x8002, spdy.PING, 4) + b"\x00\x00\x00\x01")
    with pytest.raises(spdy.SpdyError, match="short"):
        spdy.Parser().feed(struct.pack(">HHI", 0x8003, spdy.PING, 2) + b"\x00\x01")


def test_incomplete_frame_waits_for_more_bytes() -> None:
    parser = spdy.Parser()
    wire = spdy.encode_data(1, b"x" * 100)
    assert parser.feed(wire[:50]) == []
    assert parser.feed(wire[50:]) == [spdy.DataFrame(1, 0, b"x" * 100)]


def test_header_block_rejects_garbage() -> None:
    with pytest.raises(spdy.SpdyError):
        spdy.decode_headers_block(b"\x00\x00\x00\x05")
