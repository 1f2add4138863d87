"""nbd's embedded local cluster (kubesim + GCS emulator + nbd-controller), for the demo and tests."""

from devstack.stack import Stack, StackError, default_state_dir, down, status, up

__all__ = ["Stack", "StackError", "default_state_dir", "down", "status", "up"]
