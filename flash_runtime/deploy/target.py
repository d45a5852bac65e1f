"""Where a deploy goes, with the local platform started on demand.

:mod:`flash_runtime.protocol.target` resolves ``--platform`` to a :class:`Target`; the CLI's
commands also start the local platform when it is not running, which is this module's one job.
"""

from __future__ import annotations

from ..protocol.target import Target
from ..protocol.target import resolve as resolve_target


def resolve(platform: str | None, *, start: bool = False) -> Target:
    """The target for ``--platform``; ``start`` starts the local platform when it is down."""
    target = resolve_target(platform)
    if start and target.platform == "local":
        from ..platform.process import ensure_running
        from ..protocol.local import PlatformConfig

        ensure_running(PlatformConfig.load())
    return target


def local_target(start: bool = False) -> Target:
    """The local platform's target; ``start`` starts it when it is not running."""
    return resolve("local", start=start)
