"""The v4/v5 channel framing of exec and port-forward (pure)."""

from __future__ import annotations

import json

import pytest

from kubesim.streams import channels


@pytest.mark.parametrize(
    "message, v5, channel, data, closed",
    [
        (b"\x00abc", True, 0, b"abc", None),
        ("\x00typed", True, 0, b"typed", None),  # the Python client sends stdin as TEXT
        (b"\xff\x00", True, 255, b"", 0),
        (b"\xff\x00", False, 255, b"\x00", None),  # v4 has no close frames
        (b"\x01", True, 1, b"", None),
    ],
)
def test_decode(message: bytes | str, v5: bool, channel: int, data: bytes, closed: int | None) -> None:
    frame = channels.decode(message, v5=v5)
    assert (frame.channel, frame.data, frame.closed) == (channel, data, closed)


@pytest.mark.parametrize("message", [b"", b"\xff"])
def test_decode_errors(message: bytes) -> None:
    with pytest.raises(channels.FrameError):
        channels.decode(message, v5=True)


def test_encode_and_port_frames() -> None:
    assert channels.encode(1, b"x") == b"\x01x"
    assert channels.encode_close(0) == b"\xff\x00"
    assert channels.port_frame(2, 8888) == bytes([2, 8888 & 0xFF, 8888 >> 8])
    with pytest.raises(channels.FrameError):
        channels.encode(256, b"")


@pytest.mark.parametrize(
    "code, status, reason",
    [(0, "Success", None), (3, "Failure", "NonZeroExitCode"), (None, "Failure", "InternalError")],
)
def test_exit_status(code: int | None, status: str, reason: str | None) -> None:
    st = channels.exit_status(code)
    assert st["status"] == status and st.get("reason") == reason
    if code:
        assert st["details"]["causes"] == [{"reason": "ExitCode", "message": str(code)}]
    frame = channels.status_frame(code)
    assert frame[0] == channels.STATUS and json.loads(frame[1:]) == st


@pytest.mark.parametrize(
    "offered, chosen",
    [
        (["v5.channel.k8s.io", "v4.channel.k8s.io"], "v5.channel.k8s.io"),
        (["v4.channel.k8s.io"], "v4.channel.k8s.io"),
        (["channel.k8s.io"], "channel.k8s.io"),
        (["bogus"], None),
    ],
)
def test_choose_protocol(offered: list[str], chosen: str | None) -> None:
    assert channels.choose_protocol(offered, channels.EXEC_PROTOCOLS) == chosen
