"""The mapping of API server answers and transport failures to nbd errors."""

from __future__ import annotations

import json
import ssl

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from nbd.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NbdError,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from nbd.kube import NOTEBOOK, ResourceRef, crd_not_installed, error_from_exception, error_from_status

URL = "https://k8s.example:6443"


def status(code: int, reason: str, message: str, name: str | None = None) -> str:
    return json.dumps(
        {
            "kind": "Status",
            "status": "Failure",
            "code": code,
            "reason": reason,
            "message": message,
            "details": {"name": name, "kind": "notebooks"} if name else {},
        }
    )


@pytest.mark.parametrize(
    ("code", "body", "resource", "cls", "reason", "message"),
    [
        (
            401,
            status(401, "Unauthorized", "Unauthorized"),
            None,
            PermissionDenied,
            "Unauthorized",
            f"the cluster rejected your credentials (401 Unauthorized) at {URL}; "
            "log in again or check the user of this context in your kubeconfig",
        ),
        (
            403,
            status(403, "Forbidden", 'pods is forbidden: User "bob" cannot list resource "pods"'),
            None,
            PermissionDenied,
            "Forbidden",
            'the cluster refused the request: pods is forbidden: User "bob" cannot list resource "pods"; '
            "ask your cluster admin for access or use another namespace/context",
        ),
        (
            404,
            status(404, "NotFound", "the server could not find the requested resource"),
            NOTEBOOK,
            FailedPrecondition,
            "CRDNotInstalled",
            "the Notebook resource is not installed in this cluster; install the controller: kubectl apply -k cluster/manifests",
        ),
        (
            404,
            "404 page not found",
            NOTEBOOK,
            FailedPrecondition,
            "CRDNotInstalled",
            "the Notebook resource is not installed in this cluster; install the controller: kubectl apply -k cluster/manifests",
        ),
        (
            404,
            status(404, "NotFound", 'notebooks.nbd.dev "x" not found', name="x"),
            NOTEBOOK,
            NotFound,
            "NotFound",
            'notebooks.nbd.dev "x" not found',
        ),
        (
            404,
            status(404, "NotFound", 'pods "p" not found', name="p"),
            None,
            NotFound,
            "NotFound",
            'pods "p" not found',
        ),
        (
            409,
            status(409, "AlreadyExists", "x already exists"),
            None,
            AlreadyExists,
            "AlreadyExists",
            "x already exists",
        ),
        (
            409,
            status(409, "Conflict", "the object has been modified"),
            None,
            FailedPrecondition,
            "Conflict",
            "the object has been modified",
        ),
        (
            410,
            status(410, "Expired", "too old resource version"),
            None,
            FailedPrecondition,
            "Expired",
            "too old resource version",
        ),
        (
            422,
            status(422, "Invalid", "spec.x: Invalid value"),
            None,
            InvalidArgument,
            "Invalid",
            "spec.x: Invalid value",
        ),
        (
            503,
            status(503, "ServiceUnavailable", "etcd is down"),
            None,
            Unavailable,
            "ServerUnavailable",
            f"the cluster at {URL} is not answering requests (503: etcd is down); try again shortly",
        ),
        (
            504,
            "",
            None,
            DeadlineExceeded,
            "ServerTimeout",
            f"the cluster at {URL} timed out (HTTP 504); try again",
        ),
        (418, "teapot", None, NbdError, "UnexpectedStatus", f"the cluster at {URL} answered 418: teapot"),
    ],
)
def test_error_from_status(
    code: int, body: str, resource: ResourceRef | None, cls: type[NbdError], reason: str, message: str
) -> None:
    err = error_from_status(code, body, url=URL, resource=resource)
    assert type(err) is cls
    assert err.reason == reason
    assert err.message == message


def test_crd_message_builder_is_reusable() -> None:
    err = crd_not_installed(
        ResourceRef(kind="Widget", group="w.dev", custom=True, install_hint="helm install w")
    )
    assert (
        err.message
        == "the Widget resource is not installed in this cluster; install the controller: helm install w"
    )
    assert err.reason == "CRDNotInstalled"


def test_api_exception_maps_by_status() -> None:
    exc = ApiException(status=403, reason="Forbidden")
    exc.body = status(403, "Forbidden", "no")
    err = error_from_exception(exc, url=URL)
    assert isinstance(err, PermissionDenied) and "refused the request: no;" in err.message


@pytest.mark.parametrize(
    "exc",
    [
        urllib3.exceptions.MaxRetryError(
            None,
            "/api",  # type: ignore[arg-type]
            urllib3.exceptions.NewConnectionError(
                None, "Failed to establish a new connection: [Errno 111] Connection refused"
            ),  # type: ignore[arg-type]
        ),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
)
def test_unreachable_cluster(exc: BaseException) -> None:
    err = error_from_exception(exc, url=URL)
    assert isinstance(err, Unavailable) and err.reason == "ClusterUnreachable"
    assert err.message.startswith(f"cannot reach the cluster at {URL}: ")
    assert err.message.endswith("; check the context/VPN")


def test_tls_failure_is_named() -> None:
    cause = ssl.SSLCertVerificationError(1, "certificate verify failed")
    wrapped = urllib3.exceptions.MaxRetryError(None, "/api", urllib3.exceptions.SSLError(cause))  # type: ignore[arg-type]
    err = error_from_exception(wrapped, url=URL)
    assert isinstance(err, Unavailable) and err.reason == "TLSError"
    assert "check certificate-authority" in err.message


def test_nbd_errors_pass_through() -> None:
    original = NotFound("x")
    assert error_from_exception(original, url=URL) is original
