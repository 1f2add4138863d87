"""Persistent port-forwards from 127.0.0.1 to the current pod of a notebook.

`Forward` owns a local listener for the life of a session; each connection gets its own
`pods/portforward` stream to the newest Ready pod matching the selector (`nbd.forward.relay`).
`choose_port` keeps a notebook's port stable; `ForwardRecord` is what the daemon persists.
"""

from nbd.forward.forward import (
    ACTIVE,
    WAITING,
    Forward,
    ForwardRecord,
    ForwardStatusData,
)
from nbd.forward.ports import LOOPBACK, bind_port, choose_port
from nbd.forward.relay import RelayResult, relay_v4

__all__ = [
    "ACTIVE",
    "LOOPBACK",
    "WAITING",
    "Forward",
    "ForwardRecord",
    "ForwardStatusData",
    "RelayResult",
    "bind_port",
    "choose_port",
    "relay_v4",
]
