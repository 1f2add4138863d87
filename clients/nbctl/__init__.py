"""nbctl: the command line of nbd (also installed as the `kubectl notebook` plugin).

Built on `nbdclient`; it imports grpc, the nbdapi stubs, nbdclient, the local plumbing (`nbdlocal`)
and its own modules only.
"""
