"""nbd's embedded local cluster (kubesim + a store for build contexts + nbd-controller), for the demo and tests."""

from devstack.stack import Stack, StackError, default_state_dir, down, status, up

__all__ = ["Stack", "StackError", "default_state_dir", "down", "status", "up"]
