"""What the platform reports about its endpoints: Runpod's ``/health`` shape for one endpoint,
and the whole picture ``flash platform status`` prints. Read-only views of the runtime's state."""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

from ..protocol.local import PlatformConfig
from .jobs import JobStore
from .metrics import Metrics
from .state import EndpointState
from .supervisor import WorkerState


class Reported(Protocol):
    """What the reports read of the runtime (``runtime.PlatformRuntime``)."""

    config: PlatformConfig
    jobs: JobStore
    endpoints: dict[str, EndpointState]
    started_at: float
    workers_backend: str  # "process" or "docker"
    metrics: Metrics

    def url_of(self, endpoint_id: str) -> str | None: ...


def health(ep: EndpointState, jobs: JobStore) -> dict[str, Any]:
    """Runpod's ``/health`` for one endpoint, plus the last crash while workers fail."""
    running = idle = initializing = draining = 0
    for w in ep.workers.values():
        if not w.alive:
            continue
        if w.state is WorkerState.STARTING:
            initializing += 1
        elif w.state is WorkerState.DRAINING:
            draining += 1
        elif jobs.lease_count(w.id) or w.in_flight:
            running += 1
        else:
            idle += 1
    body: dict[str, Any] = {
        "jobs": jobs.counts(ep.id),
        "workers": {
            "idle": idle,
            "running": running,
            "ready": idle + running,
            "initializing": initializing,
            "draining": draining,
            "throttled": 0,
            "unhealthy": 1 if ep.failures else 0,
        },
    }
    if ep.failures and ep.last_error:
        body["lastError"] = ep.last_error
    if ep.notices:  # LOCAL: what its last deploy should tell the user (backends.py, gpus.py)
        body["notices"] = list(ep.notices)
    # LOCAL: the workers still starting, for a deploy that gives up waiting to say why.
    starting = [w for w in ep.workers.values() if w.alive and w.state is WorkerState.STARTING]
    if starting:
        now = time.monotonic()
        body["startingWorkers"] = [
            {
                "id": w.id,
                "startedSecondsAgo": round(now - w.started_at, 1),
                "lastPing": w.last_ping,
                "log": str(w.log_path) if w.log_path else None,
            }
            for w in starting
        ]
    # LOCAL: whether workers of the endpoint's current template are still to come (a roll, a
    # boot check, the minimum not reached yet): a deploy waits for this to clear.
    spec = ep.spec
    body["booting"] = bool(
        ep.boot_check
        or ep.outdated()
        or len(ep.current()) < min(spec.workers_min, spec.workers_max)
    )
    return body


def describe(runtime: Reported, ep: EndpointState) -> dict[str, Any]:
    """One endpoint for ``flash platform status``."""
    spec = ep.spec
    return {
        "id": spec.id,
        "name": spec.name,
        "type": spec.type,
        "url": runtime.url_of(spec.id),
        "resource": spec.resource_name,
        "build": spec.build_id,
        "workersMin": spec.workers_min,
        "workersMax": spec.workers_max,
        "health": health(ep, runtime.jobs),
        "workers": [
            w.info(jobs=runtime.jobs.lease_count(w.id)) for w in ep.workers.values() if w.alive
        ],
        "logs": str(runtime.config.logs_dir / spec.id),
        "figures": figures(runtime.metrics, ep),
    }


def figures(metrics: Metrics, ep: EndpointState) -> dict[str, Any]:
    """The key figures since the platform started: jobs by how they ended, LB requests."""
    labels = (("endpoint", ep.id), ("name", ep.spec.name))
    finished = metrics.by("flash_jobs_finished_total", labels, "status")
    requests = metrics.by("flash_lb_requests_total", labels, "status")
    return {
        "jobs": {status.lower(): int(n) for status, n in sorted(finished.items())},
        "lbRequests": int(sum(requests.values())),
        "lbErrors": int(sum(n for status, n in requests.items() if status.startswith("5"))),
        "restarts": int(metrics.value("flash_worker_restarts_total", labels)),
    }


def status(runtime: Reported) -> dict[str, Any]:
    """The platform: where it listens, since when, and every endpoint it runs."""
    return {
        "url": runtime.config.url,
        "pid": os.getpid(),
        "startedAt": runtime.started_at,
        "workers": runtime.workers_backend,
        "endpoints": [describe(runtime, ep) for ep in runtime.endpoints.values()],
    }
