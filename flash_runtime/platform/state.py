"""The platform's state records: what it knows of each running endpoint.

Plain data, shared by the runtime (which changes it), the balancers and the HTTP handlers
(which read it). This module imports neither the runtime nor the balancer, so neither imports
the other for its types.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .model import EndpointSpec
from .supervisor import Worker, log_tail

# A worker that was ready this long before it crashed restarts without accumulated backoff.
STABLE_AFTER_S = 10.0


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
    boot_check: bool = False  # start one worker to see the current spec boot (scaling.py)
    removed: bool = False
    notices: list[str] = field(default_factory=list)  # what its deploy should tell the user
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

    def restart_clean(self) -> None:
        """A worker became ready, or the spec changed: crash backoff and error are forgotten."""
        self.failures = 0
        self.last_error = None
        self.not_before = 0.0

    def crashed(
        self,
        worker: Worker,
        now: float,
        backoff: Callable[[int], float],
        *,
        held_work: bool = False,
    ) -> float:
        """Records that ``worker`` exited without being asked to; returns the delay before the
        next worker may start (``backoff`` of the consecutive failures). A worker that had been
        ready a while counts as a fresh failure, unless it died holding work: then a job kills
        it, and the backoff keeps growing."""
        ready_long = worker.ready_at is not None and now - worker.ready_at >= STABLE_AFTER_S
        stable = ready_long and not held_work
        self.boot_check = False  # it was seen: the crash is reported, not retried for nothing
        self.failures = 1 if stable else self.failures + 1
        delay = backoff(self.failures)
        self.not_before = now + delay
        self.last_error = {
            "workerId": worker.id,
            "exitCode": worker.exit_code,
            "beforeReady": worker.ready_at is None,
            "restarts": self.failures,
            "nextRestartIn": round(delay, 1),
            "at": time.time(),
            "log": str(worker.log_path),
            "lastLines": log_tail(worker.log_path),
        }
        return delay

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
