"""What the control plane hands to the runtime: one endpoint to run, and the runtime's interface.

The control plane (GraphQL: apps, environments, builds, endpoints) decides *what* runs; the
runtime (jobs, workers, autoscaler, load balancers) makes it run. This module is the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from .pods import Pods
    from .secretstore import SecretStore


@dataclass(frozen=True)
class EndpointSpec:
    """One endpoint as the runtime must run it."""

    id: str  # Runpod-style endpoint id, e.g. "k3j9x0a1b2c3d4"
    name: str  # display name ("lb_worker", "live-lb_worker", ...)
    resource_name: str  # the manifest resource its workers serve (FLASH_RESOURCE_NAME)
    type: Literal["qb", "lb"]
    app_id: str
    environment_id: str
    build_id: str
    artifact_path: Path  # the build's tarball on this machine
    python_version: str = ""
    workers_min: int = 0
    workers_max: int = 1
    idle_timeout: int = 60  # seconds an idle worker is kept
    scaler_type: Literal["QUEUE_DELAY", "REQUEST_COUNT"] = "QUEUE_DELAY"
    scaler_value: int = 4
    execution_timeout_ms: int = 0  # 0: no limit
    max_concurrency: int = 1
    env: dict[str, str] = field(default_factory=dict)  # extra worker environment
    image: str = ""  # the template's imageName
    # How a worker starts: "flash" (our bootstrap, in the platform's environment) or "official"
    # (the official images' entry in their environment: artifacts flash_runtime did not build).
    entry: Literal["flash", "official"] = "flash"
    # A digest of the endpoint's template: workers roll when it changes, not when the build does
    # (as on Runpod, where running workers keep the build they started with).
    template_version: str = ""
    # What the workers' machine must provide (from the build's manifest and the endpoint's
    # settings): apt packages, GPUs (0 for CPU endpoints; ``gpuIds`` as Runpod takes it), and
    # the host directory mounted where Runpod mounts the endpoint's network volume ("": none).
    system_dependencies: tuple[str, ...] = ()
    gpu_count: int = 0
    gpu_ids: str = ""
    volume_dir: str = ""


class Runtime(Protocol):
    """Runs endpoints. Implemented by the platform's supervisor."""

    # The Python versions ("3.11") whose artifacts the runtime can run workers for.
    python_versions: frozenset[str]
    # Platform secrets, rendered into workers' environments (secretstore.py).
    secrets: SecretStore
    # Task pods of Runpod SDK 2.0 apps (pods.py).
    pods: Pods

    async def apply(self, spec: EndpointSpec) -> str:
        """Create or update an endpoint; returns its URL.

        Idempotent. A spec whose template changed (``template_version``, ``env``, ``image``)
        rolls the endpoint's workers onto it without dropping accepted jobs or in-flight
        requests; a spec whose build alone changed leaves running workers alone, and the workers
        started from then on run the new artifact.
        """
        ...

    async def remove(self, endpoint_id: str) -> None:
        """Stop an endpoint's workers and forget it (its queued jobs are cancelled)."""
        ...

    def url_of(self, endpoint_id: str) -> str | None:
        """The URL of a running endpoint (QB: ``{base}/v2/{id}``; LB: its own base URL)."""
        ...

    def failure(self, endpoint_id: str) -> dict[str, Any] | None:
        """The last crash of the endpoint's workers while none of its current ones is ready
        (``lastError`` of its ``/health``); None when it serves or has not failed."""
        ...
