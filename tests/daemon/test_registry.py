"""The session registry and the event bus, without a server."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nbd.bus import EventBus, SubscriberDropped
from nbd.capabilities import Capabilities
from nbd.errors import InvalidArgument, NotFound, Unimplemented
from nbd.events import Direction, SessionEventKind, SyncChange
from nbd.registry import SessionRegistry, parse_ref
from nbd.session import Conflict, Phase, Problem, Session, SessionKey
from nbd.store import SessionStore


def run(coro):
    return asyncio.run(coro)


def S(name: str, namespace: str = "ns", context: str = "ctx") -> Session:
    return Session(name=name, namespace=namespace, context=context)


@pytest.mark.parametrize(
    "ref, parsed",
    [
        ("nb", (None, None, "nb")),
        (" nb ", (None, None, "nb")),
        ("team/nb", (None, "team", "nb")),
        ("kind-kind/team/nb", ("kind-kind", "team", "nb")),
        ("arn:aws:eks:r:1:cluster/prod/team/nb", ("arn:aws:eks:r:1:cluster/prod", "team", "nb")),
    ],
)
def test_parse_ref(ref, parsed):
    assert parse_ref(ref) == parsed


@pytest.mark.parametrize("ref", ["", "  ", "team/", "/nb", "a//b"])
def test_parse_ref_rejects_malformed(ref):
    with pytest.raises(InvalidArgument):
        parse_ref(ref)


SESSIONS = [S("solo"), S("twin", "a"), S("twin", "b"), S("dup", "x", "c1"), S("dup", "x", "c2")]


@pytest.mark.parametrize(
    "ref, expected",
    [
        ("solo", SessionKey("ctx", "ns", "solo")),
        ("ns/solo", SessionKey("ctx", "ns", "solo")),
        ("ctx/ns/solo", SessionKey("ctx", "ns", "solo")),
        ("a/twin", SessionKey("ctx", "a", "twin")),
        ("c2/x/dup", SessionKey("c2", "x", "dup")),
    ],
)
def test_resolve(tmp_path, ref, expected):
    reg = SessionRegistry(SessionStore(tmp_path))

    async def main():
        for s in SESSIONS:
            await reg.put(s)
        return reg.resolve(ref).key

    assert run(main()) == expected


@pytest.mark.parametrize(
    "ref, error, message",
    [
        ("twin", InvalidArgument, "session reference 'twin' is ambiguous: it matches ctx/a/twin, ctx/b/twin"),
        ("x/dup", InvalidArgument, "it matches c1/x/dup, c2/x/dup"),
        ("ghost", NotFound, "no session ghost; see `nbctl list`"),
        ("other/solo", NotFound, "no session other/solo"),
        ("", InvalidArgument, "a session reference is required"),
    ],
)
def test_resolve_errors(tmp_path, ref, error, message):
    reg = SessionRegistry(SessionStore(tmp_path))

    async def main():
        for s in SESSIONS:
            await reg.put(s)
        reg.resolve(ref)

    with pytest.raises(error) as e:
        run(main())
    assert message in e.value.message


def test_ref_of_is_the_shortest_unambiguous(tmp_path):
    reg = SessionRegistry(SessionStore(tmp_path))

    async def main():
        for s in SESSIONS:
            await reg.put(s)
        return {str(s.key): reg.ref_of(s) for s in reg.list()}

    assert run(main()) == {
        "ctx/ns/solo": "solo",
        "ctx/a/twin": "a/twin",
        "ctx/b/twin": "b/twin",
        "c1/x/dup": "c1/x/dup",
        "c2/x/dup": "c2/x/dup",
    }


def test_changes_are_persisted_and_published(tmp_path):
    store = SessionStore(tmp_path)
    reg = SessionRegistry(store)

    async def main():
        sub = reg.subscribe()
        s = await reg.put(S("nb"))
        await reg.update("nb", phase=Phase.READY)
        await reg.update(s.key, message="m")
        reg.publish_detail(s.key, SyncChange(Direction.TO_REMOTE, "a.py", "modify", 3))
        reg.publish_detail(s.key, Conflict("b.py"))
        reg.publish_detail(s.key, Problem("c.py", "denied"))
        reg.publish_detail(SessionKey("no", "such", "session"), Problem("x"))  # Ignored.
        await reg.remove(s.key)
        assert await reg.remove(s.key) is None
        events = []
        sub.close()
        async for e in sub:
            events.append(e)
        return events

    events = run(main())
    assert [e.kind for e in events] == [
        SessionEventKind.ADDED,
        SessionEventKind.UPDATED,
        SessionEventKind.UPDATED,
        SessionEventKind.SYNC_CHANGE,
        SessionEventKind.CONFLICT,
        SessionEventKind.PROBLEM,
        SessionEventKind.REMOVED,
    ]
    assert events[1].session.phase == Phase.READY and events[2].session.message == "m"
    assert store.load_all() == []


def test_the_file_always_ends_with_the_latest_state(tmp_path):
    store = SessionStore(tmp_path)
    reg = SessionRegistry(store)

    async def main():
        s = await reg.put(S("nb"))
        await asyncio.gather(*(reg.update(s.key, message=str(i)) for i in range(20)))
        await reg.flush()

    run(main())
    (saved,) = store.load_all()
    assert saved.message == "19"


def test_load_and_snapshot_filtered(tmp_path):
    store = SessionStore(tmp_path)
    for s in SESSIONS:
        store.save(s)
    reg = SessionRegistry(store)

    async def main():
        await reg.load()
        return reg.snapshot(["twin"]), reg.snapshot()

    twins, everything = run(main())
    assert [str(e.session.key) for e in twins] == ["ctx/a/twin", "ctx/b/twin"]
    assert all(e.kind == SessionEventKind.SNAPSHOT for e in everything) and len(everything) == 5


def test_subscription_filter_matches_future_sessions(tmp_path):
    reg = SessionRegistry(SessionStore(tmp_path))

    async def main():
        sub = reg.subscribe(["b/twin"])
        for s in SESSIONS:
            await reg.put(s)
        sub.close()
        return [str(e.session.key) async for e in sub]

    assert run(main()) == ["ctx/b/twin"]


def test_bus_fans_out_and_drops_slow_subscribers(caplog):
    async def main():
        bus: EventBus[int] = EventBus()
        fast = bus.subscribe(name="fast", maxsize=100)
        slow = bus.subscribe(name="slow", maxsize=3)
        with caplog.at_level(logging.WARNING, logger="nbd.bus"):
            for i in range(10):
                bus.publish(i)
        got_slow = []
        with pytest.raises(SubscriberDropped) as e:
            async for i in slow:
                got_slow.append(i)
        assert "fell more than 3 events behind" in e.value.message
        assert bus.subscriber_count == 1
        bus.close()
        got_fast = [i async for i in fast]
        late = bus.subscribe()
        return got_fast, got_slow, [i async for i in late]

    got_fast, got_slow, late = run(main())
    assert got_fast == list(range(10)) and got_slow == [0, 1, 2] and late == []
    assert "dropping slow event subscriber slow" in caplog.text


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda c: c.require_launcher(),
            "launch is not available in this daemon build: the launch capability is not installed",
        ),
        (
            lambda c: c.require_stopper(),
            "stop is not available in this daemon build: the launch capability is not installed",
        ),
        (
            lambda c: c.require_logs(),
            "logs is not available in this daemon build: the logs capability is not installed",
        ),
        (
            lambda c: c.require_sync(),
            "sync is not available in this daemon build: the sync capability is not installed",
        ),
    ],
)
def test_missing_capabilities_are_unimplemented(call, message):
    with pytest.raises(Unimplemented) as e:
        call(Capabilities())
    assert e.value.message == message


def test_a_failed_capability_is_named():
    caps = Capabilities(problems={"launch": "ImportError: no module kubernetes"})
    with pytest.raises(Unimplemented) as e:
        caps.require_launcher()
    assert "the launch capability failed to load (ImportError: no module kubernetes)" in e.value.message
    with pytest.raises(Unimplemented) as e:
        caps.require_sync()
    assert "capabilities that failed to load: launch: ImportError" in e.value.message
