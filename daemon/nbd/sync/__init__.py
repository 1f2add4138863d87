"""nbd's two-way sync engine: a local directory and a pod's /content, kept equal both ways.

Layers, each importing only those below it (the import-linter contracts of pyproject.toml keep them):
`session` (the asyncio loop) → `sides` (what is known of each side) / `state` (the persisted
ancestor) / `context_files` (the packaged context's files, a seed for a missing ancestor) →
`transition` (applying plans: stage, then transition) → `exec_transport` / `remote` /
`local` (the two endpoints) → `endpoint` → `shipping` (the agent's zipapp and its bootstrap) →
`agent` (a stdlib-only package: file-system work, also run in the pod; the daemon imports its
paths, frames, ignore rules and `Tree`); `reconcile` → `snapshot` (the pure core: no I/O, no
asyncio). What the engine reports (states,
status, conflicts, problems) is `nbd.status`'s vocabulary, below all of them.

The daemon wires a session as:

    target = await nbd.kube.target.load_target(kubeconfig, context, namespace)
    factory = nbd.sync.exec_transport.exec_transport_factory(target, namespace, pod_or_resolver)
    session = SyncSession(directory, factory, state_path, SyncOptions(), on_event)
    await session.start()
"""

from nbd.status import Conflict, Problem, SyncState, SyncStatus
from nbd.sync.reconcile import DeleteGuard
from nbd.sync.remote import AgentTransport, LocalProcessTransport, TransportFactory, local_process_factory
from nbd.sync.session import (
    ChangeApplied,
    ConflictFound,
    ProblemFound,
    StateChanged,
    SyncEvent,
    SyncOptions,
    SyncSession,
)

__all__ = [
    "AgentTransport",
    "ChangeApplied",
    "Conflict",
    "ConflictFound",
    "DeleteGuard",
    "LocalProcessTransport",
    "Problem",
    "ProblemFound",
    "StateChanged",
    "SyncEvent",
    "SyncOptions",
    "SyncSession",
    "SyncState",
    "SyncStatus",
    "TransportFactory",
    "local_process_factory",
]
