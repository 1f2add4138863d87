"""nbd's two-way sync engine: a local directory and a pod's /content, kept equal both ways.

Layers, each importing only those below it:
`session` (the asyncio loop) → `transition` (applying plans) → `local` / `remote` (the two
endpoints) → `agent` (file-system work, also run in the pod) ; `reconcile` → `snapshot` (pure).
"""

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
    SyncState,
    SyncStatusData,
)
from nbd.sync.snapshot import Conflict, Problem

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
    "SyncStatusData",
    "TransportFactory",
    "local_process_factory",
]
