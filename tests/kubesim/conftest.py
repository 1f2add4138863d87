"""Fixtures of the kubesim API-server tests: a CRD to play with and Python clients."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from kubesim.testing import KubesimServer

WIDGET_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.dev"},
    "spec": {
        "group": "example.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    {"name": "Port", "type": "integer", "jsonPath": ".spec.port"},
                    {
                        "name": "Ready",
                        "type": "string",
                        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
                    },
                ],
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "required": ["port"],
                                "properties": {
                                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                    "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
                                    "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 8},
                                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
                                    "env": {"type": "object", "additionalProperties": {"type": "string"}},
                                    "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                },
                            },
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def widget_crd() -> dict[str, Any]:
    return copy.deepcopy(WIDGET_CRD)


def widget(name: str, port: int = 80, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"port": port, **spec},
    }


@pytest.fixture
def apiserver(kubesim_factory: Any) -> KubesimServer:
    """A fresh kubesim without its kubelet: these tests are about the API server alone."""
    return kubesim_factory(kubelet=False)  # type: ignore[no-any-return]


@pytest.fixture
def api(apiserver: KubesimServer) -> Iterator[Any]:
    """A kubernetes ApiClient for a fresh API server."""
    client = apiserver.api_client()
    yield client
    client.close()


@pytest.fixture
def crd_manifest() -> dict[str, Any]:
    """The Widget CRD (example.dev/v1, status subresource, printer columns, a schema with rules)."""
    return widget_crd()


@pytest.fixture
def make_widget() -> Any:
    """`make_widget(name, port=80, **spec)` → a Widget manifest."""
    return widget
