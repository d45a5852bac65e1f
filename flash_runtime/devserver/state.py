"""What the development server serves: the released build and its endpoints (plain records).

Shared by the session (which replaces the snapshot on every release) and the HTTP app (which
reads it), so that neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..manifest import Manifest


@dataclass(frozen=True)
class LiveEndpoint:
    """One endpoint of the app as the development server fronts it."""

    resource: str  # the name in Endpoint(name=...): the first segment of its paths here
    name: str  # the deployed endpoint's name (live-...)
    id: str
    type: str  # "qb" | "lb"
    url: str  # where the platform serves it
    routes: tuple[str, ...]  # load-balanced: "POST /process", ...
    function: str  # queue-based: the function it runs

    def paths(self) -> list[str]:
        """``METHOD /path`` on the development server."""
        if self.type == "qb":
            base = f"/{self.resource}"
            return [f"POST {base}/run", f"POST {base}/runsync", f"GET {base}/status/{{job_id}}"]
        out = []
        for route in self.routes:
            method, _, path = route.partition(" ")
            out.append(f"{method} /{self.resource}{path}")
        return out


@dataclass(frozen=True)
class Snapshot:
    """What is being served: one released build."""

    build_id: str
    manifest: Manifest
    endpoints: dict[str, LiveEndpoint]
    fingerprint: str | None
