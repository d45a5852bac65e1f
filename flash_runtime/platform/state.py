"""The platform's state records: what it knows of each running endpoint.

Plain data, shared by the runtime (which changes it), the balancers and the HTTP handlers
(which read it). This module imports neither the runtime nor the balancer, so neither imports
the other for its types.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .model import EndpointSpec
from .supervisor import Worker


class BalancerHandle(Protocol):
    """What the runtime asks of a load-balanced endpoint's balancer (``balancer.Balancer``)."""

    closing: bool

    def watch(self, worker: Worker) -> None: ...

    async def close(self) -> None: ...


@dataclass(eq=False)
class EndpointState:
    """One running endpoint: its spec, its workers and its scaling state."""

    spec: EndpointSpec
    generation: str
    app_dir: Path
    lb_port: int | None = None
    workers: dict[str, Worker] = field(default_factory=dict)
    balancer: BalancerHandle | None = None
    not_before: float = 0.0  # crash backoff: no new worker before this (monotonic)
    failures: int = 0  # consecutive crashes
    last_error: dict[str, Any] | None = None
    roll_target: int = 0  # new-spec workers to start while old ones still serve
    lb_waiting: int = 0  # load-balanced requests waiting for a ready worker
    removed: bool = False
    _changed: asyncio.Event | None = None

    @property
    def id(self) -> str:
        return self.spec.id

    def current(self) -> list[Worker]:
        """Serving workers of the current spec."""
        return [w for w in self.workers.values() if w.generation == self.generation and w.serving]

    def outdated(self) -> list[Worker]:
        """Serving workers of a previous spec (rolling update in progress)."""
        return [w for w in self.workers.values() if w.generation != self.generation and w.serving]

    def notify(self) -> None:
        """Wake whoever waits for a worker of this endpoint to become ready or fail."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def changed(self, timeout: float) -> None:
        if self._changed is None:
            self._changed = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._changed.wait()
