"""nbd, the per-user daemon: sessions, launches, port-forwards and two-way sync behind a gRPC API.

`nbd.main` starts it; `nbd.app.App` wires it; capabilities plug in through `nbd.capabilities`.
"""
