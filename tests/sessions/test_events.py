"""The Events RPC (through nbdclient) streams a live session's forward state and sync changes."""

from __future__ import annotations

import threading

from sessions_support import wait_for, write

from nbdapi.v1 import notebooks_pb2 as pb


class Collector:
    """Reads an Events stream in a thread; `events` grows as they arrive."""

    def __init__(self, stream):
        self.stream = stream
        self.events: list[pb.SessionEvent] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.events.append(event)
        except BaseException as e:  # reported by the test
            self.error = e

    def find(self, predicate):
        assert self.error is None, self.error
        return [e for e in list(self.events) if predicate(e)]

    def close(self) -> None:
        self.stream.cancel()
        self.thread.join(10)


def test_events_stream_forward_state_sync_changes_and_conflicts(notebook_factory):
    nb = notebook_factory()
    with nb.daemon.client() as client:
        collector = Collector(client.events([nb.name], initial=True))
        try:
            snapshot = wait_for(
                lambda: collector.find(lambda e: e.kind == pb.SESSION_EVENT_KIND_SNAPSHOT),
                "the initial snapshot",
            )
            assert snapshot[0].session.forward.state == pb.FORWARD_STATE_ACTIVE
            assert snapshot[0].session.forward.local_port == nb.port

            # A local edit: a SyncChange to the pod.
            write(nb.directory / "main.py", "print('changed')\n")
            change = wait_for(
                lambda: collector.find(
                    lambda e: e.kind == pb.SESSION_EVENT_KIND_SYNC_CHANGE and e.sync_change.path == "main.py"
                ),
                "a SyncChange event for main.py",
            )[0]
            assert change.sync_change.direction == pb.SyncChange.DIRECTION_TO_REMOTE
            assert change.sync_change.action == "modify"
            assert change.sync_change.bytes == len("print('changed')\n")

            # A pod-side edit: a SyncChange to local.
            nb.pod_write("out.csv", "a,b\n")
            wait_for(
                lambda: collector.find(
                    lambda e: (
                        e.kind == pb.SESSION_EVENT_KIND_SYNC_CHANGE
                        and e.sync_change.path == "out.csv"
                        and e.sync_change.direction == pb.SyncChange.DIRECTION_TO_LOCAL
                        and e.sync_change.action == "create"
                    )
                ),
                "a SyncChange event for out.csv to local",
            )

            # A conflict: a Conflict event, and the session's sync status lists it.
            nb.sync("pause")
            write(nb.directory / "data" / "f01.txt", "local\n")
            nb.pod_write("data/f01.txt", "pod\n")
            nb.sync("resume")
            conflict = wait_for(
                lambda: collector.find(lambda e: e.kind == pb.SESSION_EVENT_KIND_CONFLICT), "a Conflict event"
            )[0]
            assert conflict.conflict.path == "data/f01.txt"
            assert conflict.conflict.copy_path.startswith("data/f01.conflict-")
            wait_for(
                lambda: collector.find(
                    lambda e: (
                        e.kind == pb.SESSION_EVENT_KIND_UPDATED
                        and [c.path for c in e.session.sync.conflicts] == ["data/f01.txt"]
                    )
                ),
                "an update listing the conflict",
            )

            # The pod goes: the forward waits for a pod, then is active on the new one.
            mark = len(collector.events)
            pod = nb.pod()
            nb.stack.core().delete_namespaced_pod(pod["name"], nb.namespace, grace_period_seconds=0)

            def forward_states() -> list[int]:
                return [
                    e.session.forward.state
                    for e in collector.events[mark:]
                    if e.kind == pb.SESSION_EVENT_KIND_UPDATED
                ]

            wait_for(lambda: pb.FORWARD_STATE_WAITING_FOR_POD in forward_states(), "a waiting-for-pod update")
            wait_for(
                lambda: (
                    (s := forward_states())
                    and pb.FORWARD_STATE_ACTIVE in s[s.index(pb.FORWARD_STATE_WAITING_FOR_POD) :]
                ),
                "the forward active again",
            )
            # The sync went through reconnecting and back to watching.
            sync_states = [e.session.sync.state for e in collector.events[mark:]]
            wait_for(
                lambda: (
                    pb.SYNC_STATE_WATCHING in [e.session.sync.state for e in collector.events[mark:]]
                    and pb.SYNC_STATE_CONNECTING in [e.session.sync.state for e in collector.events[mark:]]
                ),
                f"the sync to reconnect ({sync_states})",
            )
        finally:
            collector.close()
    assert collector.error is None
