"""Where a control plane is: its address, key, and how an endpoint's id maps to its URL.

The deployer, the dev server and cross-endpoint calls take a :class:`Target` and have no other
notion of which platform they talk to. Building one for the local platform or from the user's
settings is :func:`resolve`'s job (the CLI's ``--platform``, ``RUNPOD_API_KEY``, the local platform's
settings); starting the local platform when it is not running is the CLI's
(:func:`flash_runtime.deploy.target.resolve`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from ..errors import FlashError

if TYPE_CHECKING:
    from .local import PlatformConfig

Platform = Literal["local", "runpod"]
PLATFORMS: tuple[Platform, ...] = ("local", "runpod")

RUNPOD_API_URL = "https://api.runpod.io"
RUNPOD_ENDPOINT_URL = "https://api.runpod.ai/v2"
RUNPOD_REST_URL = "https://rest.runpod.io/v1"


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
    rest_url: str = ""  # Runpod's REST API (network volumes): {rest_url}/networkvolumes

    @property
    def graphql_url(self) -> str:
        return f"{self.api_url}/graphql"

    def endpoint_url(self, endpoint_id: str, endpoint_type: str) -> str | None:
        """The URL an endpoint is called at (``endpoint_type``: ``qb`` or ``lb``), when the
        platform's conventions give it."""
        if endpoint_type == "lb":
            return self.lb_url_template.format(id=endpoint_id) if self.lb_url_template else None
        return f"{self.queue_url_base}/{endpoint_id}"


def local_target(config: PlatformConfig | None = None) -> Target:
    """The local platform (``FLASH_PLATFORM_URL``, key from ``FLASH_HOME``), or the one
    ``config`` describes."""
    from .local import PlatformConfig

    config = config or PlatformConfig.load()
    return Target(
        platform="local",
        api_url=config.url,
        api_key=config.api_key,
        queue_url_base=f"{config.url}/v2",
        lb_url_template=None,
        unreachable_hint="is the platform running? Start it with `flash platform start`",
        key_hint="the local platform's key, shown by `flash platform status`",
        rest_url=f"{config.url}/v1",
    )


def runpod_target() -> Target:
    """Runpod, with the user's key (:func:`.credentials.api_key`: ``RUNPOD_API_KEY``, the
    project's ``.env``, or what ``flash login`` stored) and the ``RUNPOD_API_BASE_URL`` /
    ``RUNPOD_ENDPOINT_BASE_URL`` overrides the reference implementation honours)."""
    from .credentials import api_key

    key = api_key()
    if not key:
        raise FlashError(
            "--platform runpod needs an API key: run `flash login`, or export RUNPOD_API_KEY=... "
            "(or put it in the project's .env); create one at "
            "https://www.runpod.io/console/user/settings"
        )
    api_url = (os.environ.get("RUNPOD_API_BASE_URL") or RUNPOD_API_URL).strip().rstrip("/")
    queue_base = (os.environ.get("RUNPOD_ENDPOINT_BASE_URL") or RUNPOD_ENDPOINT_URL).strip()
    queue_base = queue_base.rstrip("/")
    host = urlsplit(queue_base).netloc or "api.runpod.ai"
    return Target(
        platform="runpod",
        api_url=api_url,
        api_key=key,
        queue_url_base=queue_base,
        lb_url_template=f"https://{{id}}.{host}",
        unreachable_hint="check your network connection and https://uptime.runpod.io",
        key_hint="your Runpod API key",
        rest_url=(os.environ.get("RUNPOD_REST_API_URL") or RUNPOD_REST_URL).strip().rstrip("/"),
    )


def default_platform() -> Platform:
    """``runpod`` when the user has a Runpod key (``RUNPOD_API_KEY``, the project's ``.env``,
    or ``flash login``'s), else ``local``.

    A key equal to the local platform's key (exported to call local endpoints with the printed
    curl lines) does not count: it would send the next deploy to Runpod.
    """
    from .credentials import api_key

    key = api_key()
    if not key:
        return "local"
    from .local import PlatformConfig

    return "local" if key == PlatformConfig.load().api_key else "runpod"


def resolve(platform: str | None) -> Target:
    """The target for ``--platform`` (None: :func:`default_platform`)."""
    chosen = platform or default_platform()
    if chosen == "runpod":
        return runpod_target()
    if chosen == "local":
        return local_target()
    raise FlashError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")
