"""Persistent port-forwards from 127.0.0.1 to the current pod of a notebook.

`Forward` owns a local listener for the life of a session; each connection gets its own
`pods/portforward` stream to the newest Ready pod matching the selector (`nbd.forward.relay`).
`choose_port` keeps a notebook's port stable; `ForwardRecord` (`nbd.session`'s) is what the daemon
persists. A forward reports its state as an `nbd.status.ForwardStatus`.
"""

from nbd.forward.forward import Forward, ForwardRecord
from nbd.forward.ports import LOOPBACK, bind_port, choose_port
from nbd.forward.relay import RelayResult, relay_v4

__all__ = [
    "LOOPBACK",
    "Forward",
    "ForwardRecord",
    "RelayResult",
    "bind_port",
    "choose_port",
    "relay_v4",
]
