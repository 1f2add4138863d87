"""The Sync RPC's force flag goes only with resume; the daemon says so before anything else."""

from __future__ import annotations

import grpc
import pytest

from nbdclient.errors import NbdClientError


@pytest.mark.parametrize("action", ["status", "pause", "flush"])
def test_force_without_resume_is_refused(fake_daemon, action):
    with fake_daemon.client() as client:
        with pytest.raises(NbdClientError) as info:
            client.sync("any", action, force=True)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"force applies only to resume (it passes the delete guard), not to {action}" in str(info.value)


def test_nbctl_force_without_resume_is_a_usage_error(fake_daemon):
    result = fake_daemon.run_nbctl("sync", "any", "flush", "--force")
    assert result.returncode == 1
    assert "--force goes only with resume" in result.stderr
