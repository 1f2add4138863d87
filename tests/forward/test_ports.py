"""Local port choice: preferred, next free, explicit, and the errors a user sees."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nbd.errors import FailedPrecondition, InvalidArgument, Unavailable
from nbd.forward import ForwardRecord, bind_port, choose_port


@contextmanager
def occupied(count: int = 1) -> Iterator[list[int]]:
    """`count` consecutive listening ports on 127.0.0.1 (held until exit)."""
    for _ in range(50):
        first = socket.socket()
        first.bind(("127.0.0.1", 0))
        base = first.getsockname()[1]
        held = [first]
        try:
            for port in range(base + 1, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                held.append(s)
        except OSError:
            for s in held:
                s.close()
            continue
        for s in held:
            s.listen()
        try:
            yield [s.getsockname()[1] for s in held]
        finally:
            for s in held:
                s.close()
        return
    raise RuntimeError("no run of free ports found")


def test_preferred_port_is_used_when_free() -> None:
    free = choose_port(None, None)
    assert choose_port(free, None) == free


def test_taken_preferred_port_moves_to_the_next_free_one() -> None:
    with occupied(3) as ports:
        chosen = choose_port(ports[0], None)
        assert chosen > ports[-1]


def test_bounded_scan_gives_up_with_a_clear_error() -> None:
    with occupied(3) as ports:
        with pytest.raises(Unavailable) as info:
            choose_port(ports[0], None, scan=2)
        assert info.value.reason == "PortInUse"
        assert f"ports {ports[0]}-{ports[0] + 2} on 127.0.0.1 are all in use" in info.value.message


def test_explicit_port_taken_is_never_replaced() -> None:
    with occupied() as (port,):
        with pytest.raises(FailedPrecondition) as info:
            choose_port(None, port)
        assert info.value.reason == "PortInUse"
        assert info.value.message == (
            f"port {port} on 127.0.0.1 is in use by another program; "
            "choose another with --port or stop that program"
        )
        with pytest.raises(FailedPrecondition):
            choose_port(port + 1, port)  # explicit wins over preferred


def test_only_loopback_is_bound() -> None:
    sock = bind_port(None, None)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()


@pytest.mark.parametrize(("preferred", "explicit"), [(None, 0), (None, 70000), (-1, None), (65536, None)])
def test_invalid_ports(preferred: int | None, explicit: int | None) -> None:
    with pytest.raises(InvalidArgument):
        choose_port(preferred, explicit)


def test_record_round_trip_and_bad_records() -> None:
    record = ForwardRecord("/k", "ctx", "ns", {"a": "1"}, 8888, 18888, None)
    assert ForwardRecord.from_json(record.to_json()) == record
    for bad in ({}, {**record.to_json(), "selector": "a=1"}, {**record.to_json(), "local_port": "x"}):
        with pytest.raises(InvalidArgument) as info:
            ForwardRecord.from_json(bad)
        assert info.value.reason == "InvalidRecord"
