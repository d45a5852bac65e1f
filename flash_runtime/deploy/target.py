"""Where a deploy goes: Runpod, or the local platform.

The two differ only in data: the control plane's address and key, and how an endpoint's id maps
to its URL. The deployer and the client take a :class:`Target` and have no other notion of which
platform they talk to.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ..errors import FlashError
from ..protocol.target import PLATFORMS, RUNPOD_API_URL, RUNPOD_ENDPOINT_URL, Platform, Target


def local_target(start: bool = False) -> Target:
    """The local platform (``FLASH_PLATFORM_URL``, key from ``FLASH_HOME``); ``start`` starts it
    when it is not running."""
    from ..platform.config import PlatformConfig

    config = PlatformConfig.load()
    if start:
        from ..platform.cli import ensure_running

        ensure_running(config)
    return Target(
        platform="local",
        api_url=config.url,
        api_key=config.api_key,
        queue_url_base=f"{config.url}/v2",
        lb_url_template=None,
        unreachable_hint="is the platform running? Start it with `flash platform start`",
        key_hint="the local platform's key, shown by `flash platform status`",
    )


def runpod_target() -> Target:
    """Runpod, with ``RUNPOD_API_KEY`` (and the ``RUNPOD_API_BASE_URL`` /
    ``RUNPOD_ENDPOINT_BASE_URL`` overrides the reference implementation honours)."""
    key = os.environ.get("RUNPOD_API_KEY", "").strip()
    if not key:
        raise FlashError(
            "--platform runpod needs an API key: export RUNPOD_API_KEY=... (create one at "
            "https://www.runpod.io/console/user/settings)"
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
    )


def default_platform() -> Platform:
    """``runpod`` when ``RUNPOD_API_KEY`` holds a Runpod key, else ``local``.

    A ``RUNPOD_API_KEY`` equal to the local platform's key (exported to call local endpoints
    with the printed curl lines) does not count: it would send the next deploy to Runpod.
    """
    key = os.environ.get("RUNPOD_API_KEY", "").strip()
    if not key:
        return "local"
    from ..platform.config import PlatformConfig

    return "local" if key == PlatformConfig.load().api_key else "runpod"


def resolve(platform: str | None, *, start: bool = False) -> Target:
    """The target for ``--platform`` (None: :func:`default_platform`)."""
    chosen = platform or default_platform()
    if chosen == "runpod":
        return runpod_target()
    if chosen == "local":
        return local_target(start=start)
    raise FlashError(f"unknown platform {platform!r}: use one of {', '.join(PLATFORMS)}")
