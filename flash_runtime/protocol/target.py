"""Where a control plane is: its address, key, and how an endpoint's id maps to its URL.

The deployer, the dev server and cross-endpoint calls take a :class:`Target` and have no other
notion of which platform they talk to. Building one for the local platform or from the user's
settings is :mod:`flash_runtime.deploy.target`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Platform = Literal["local", "runpod"]
PLATFORMS: tuple[Platform, ...] = ("local", "runpod")

RUNPOD_API_URL = "https://api.runpod.io"
RUNPOD_ENDPOINT_URL = "https://api.runpod.ai/v2"


@dataclass(frozen=True)
class Target:
    """A control plane and its URL conventions."""

    platform: Platform
    api_url: str  # GraphQL base; documents are POSTed to {api_url}/graphql
    api_key: str
    queue_url_base: str  # a queue-based endpoint is {queue_url_base}/{id}
    # A load-balanced endpoint's base URL, with {id} for its id; None when it cannot be derived
    # from the id (the local platform gives each one a port and records its URL itself).
    lb_url_template: str | None
    unreachable_hint: str  # what to do when the control plane does not answer
    key_hint: str  # where the key for calling the endpoints comes from

    @property
    def graphql_url(self) -> str:
        return f"{self.api_url}/graphql"

    def endpoint_url(self, endpoint_id: str, endpoint_type: str) -> str | None:
        """The URL an endpoint is called at (``endpoint_type``: ``qb`` or ``lb``), when the
        platform's conventions give it."""
        if endpoint_type == "lb":
            return self.lb_url_template.format(id=endpoint_id) if self.lb_url_template else None
        return f"{self.queue_url_base}/{endpoint_id}"
