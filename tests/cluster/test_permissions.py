"""The controller's start-up permission check: what it asks, and the one line it gives when denied."""

from __future__ import annotations

from nbd_controller.permissions import REQUIRED, Permission, describe, missing


def test_every_required_permission_is_asked_in_each_watched_namespace() -> None:
    asked: list[tuple[Permission, str]] = []

    def review(p: Permission, ns: str) -> bool:
        asked.append((p, ns))
        return True

    assert missing(review) == []
    assert asked == [(p, "") for p in REQUIRED]
    asked.clear()
    assert missing(review, ("team-a", "team-b")) == []
    assert {ns for _, ns in asked} == {"team-a", "team-b"} and len(asked) == 2 * len(REQUIRED)


def test_the_denied_ones_are_named_with_where_to_grant_them() -> None:
    def review(p: Permission, ns: str) -> bool:
        return p.subresource != "finalizers" and not (
            ns == "b" and p.resource == "jobs" and p.verb == "create"
        )

    denied = missing(review, ("a", "b"))
    assert describe(denied) == (
        "missing permissions: update notebooks/finalizers (nbd.dev) in a, update runs/finalizers (nbd.dev) in a, "
        "update notebooks/finalizers (nbd.dev) in b, update runs/finalizers (nbd.dev) in b, "
        "create jobs (batch) in b; grant them in its ClusterRole (cluster/manifests/rbac-controller.yaml)"
    )
