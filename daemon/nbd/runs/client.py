"""The daemon's side of the Run protocol: the Notebook client's calls, on Runs and their pods.

A Run goes through the same upload and build handshake as a Notebook (`spec.build.upload`,
`status.upload`, the Uploaded and Built conditions), so `nbd.launch.building.Delivery` drives both.
"""

from __future__ import annotations

from typing import Any

from nbd.kube import RUN
from nbd.launch.notebooks import NotebookClient
from nbdcontract import (
    COMPONENT_OUTPUTS,
    COMPONENT_RUN,
    LABEL_COMPONENT,
    LABEL_RUN,
    RUN_KIND,
    RUN_PLURAL,
    RUN_SINGULAR,
)

__all__ = ["RunClient"]


class RunClient(NotebookClient):
    """One namespace's Runs, their pods and their logs."""

    plural = RUN_PLURAL
    singular = RUN_SINGULAR
    noun = RUN_KIND
    resource = RUN

    async def list_runs(self) -> list[dict[str, Any]]:
        data = await self.kube.transport.get_json(self._path, resource=self.resource)
        items = [r for r in data.get("items") or [] if isinstance(r, dict)]
        items.sort(key=lambda r: str((r.get("metadata") or {}).get("creationTimestamp") or ""))
        return items

    async def run_pods(self, name: str) -> list[dict[str, Any]]:
        """The run's pods (every attempt of every rank), oldest first."""
        return await self.pods({LABEL_RUN: name, LABEL_COMPONENT: COMPONENT_RUN})

    async def reader_pods(self, name: str) -> list[dict[str, Any]]:
        return await self.pods({LABEL_RUN: name, LABEL_COMPONENT: COMPONENT_OUTPUTS})
