"""The autoscaler's policy: a pure function from what an endpoint looks like now to a plan.

:func:`plan` sees an :class:`EndpointView` (the endpoint's settings and load) and a
:class:`WorkerView` per serving worker, and answers with a :class:`Plan`: how many workers to
start and which to drain, and why. It reads no clock and changes nothing; the runtime
(``runtime.py``) builds the views on every tick and carries the plan out. The rules, in order:

1. **Rolling update.** Workers of an older spec are drained once a worker of the current spec is
   ready (or when the endpoint may run none); until then the update's target count of new
   workers (``roll_target``) is kept up.
2. **How many.** At least ``workersMin`` and the roll target, at most ``workersMax``. A queue
   endpoint with queued jobs and no worker gets one; with workers, none of them starting, one
   more when ``REQUEST_COUNT`` finds more than ``scalerValue`` jobs (queued and running) per
   worker, or ``QUEUE_DELAY`` finds the oldest job waiting longer than ``scalerValue`` seconds.
   A load-balanced endpoint gets one for a waiting request when it has none, and one more when
   the requests in flight exceed ``scalerValue`` per ready worker. No new worker before
   ``not_before`` (crash backoff).
3. **Too many** (``workersMax`` lowered): the least busy of our own workers are drained.
4. **Idle.** Ready workers of ours idle for ``idleTimeout`` seconds are drained, oldest
   activity first, keeping the minimum and the roll target.

A **boot check** (``boot_check``: an endpoint just created, or just given a new template, with
no worker to keep) counts as work waiting: one worker starts, so that a deploy learns whether the
code boots; once ready it idles out like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerView:
    """One serving worker, as the policy sees it."""

    id: str
    ready: bool  # READY (else STARTING)
    outdated: bool  # runs an older spec of the endpoint
    ours: bool = True  # a process the platform started (external workers are never drained)
    busy: int = 0  # jobs leased plus load-balanced requests in flight
    in_flight: int = 0  # load-balanced requests in flight
    last_active: float = 0.0  # monotonic time it last had work


@dataclass(frozen=True)
class EndpointView:
    """An endpoint's settings and load."""

    kind: str  # "qb" | "lb"
    workers_min: int = 0
    workers_max: int = 1
    scaler_type: str = "QUEUE_DELAY"  # or REQUEST_COUNT
    scaler_value: int = 4
    idle_timeout: float = 60.0
    roll_target: int = 0
    not_before: float = 0.0  # crash backoff (monotonic)
    queued: int = 0  # queue: jobs waiting
    running: int = 0  # queue: jobs running
    oldest_wait: float = 0.0  # queue: seconds the oldest queued job has waited
    lb_waiting: int = 0  # load-balanced: requests waiting for a ready worker
    boot_check: bool = False  # start one worker to see that it boots (see the module's rules)


@dataclass
class Plan:
    """What to do now: start ``spawn`` workers, drain ``drain`` (worker id, why)."""

    spawn: int = 0
    drain: list[tuple[str, str]] = field(default_factory=list)
    roll_target: int = 0


def plan(ep: EndpointView, workers: Sequence[WorkerView], now: float) -> Plan:
    """The plan for one endpoint at monotonic time ``now`` (see the module's rules)."""
    maximum = max(0, ep.workers_max)
    minimum = min(max(0, ep.workers_min), maximum)
    current = [w for w in workers if not w.outdated]
    outdated = [w for w in workers if w.outdated]
    ready = [w for w in current if w.ready]
    starting = len(current) - len(ready)
    n = len(current)
    out = Plan(roll_target=ep.roll_target)

    if outdated and (ready or maximum == 0):
        out.drain += [(w.id, "outdated") for w in outdated]
        out.roll_target = 0
    elif not outdated:
        out.roll_target = 0

    want = max(n, minimum, out.roll_target, 1 if ep.boot_check else 0)
    if ep.kind == "qb":
        if ep.queued and n == 0:
            want = max(want, 1)
        elif ep.queued and not starting and n < maximum:
            if ep.scaler_type == "REQUEST_COUNT":
                if ep.queued + ep.running > ep.scaler_value * n:
                    want = max(want, n + 1)
            elif ep.oldest_wait > ep.scaler_value:
                want = max(want, n + 1)
    else:
        if ep.lb_waiting and n == 0:
            want = max(want, 1)
        elif not starting and n < maximum:
            in_flight = sum(w.in_flight for w in ready) + ep.lb_waiting
            if in_flight > ep.scaler_value * max(1, len(ready)):
                want = max(want, n + 1)
    want = min(want, maximum)

    if want > n and now >= ep.not_before:
        out.spawn = want - n
        return out
    if n > maximum:
        ours = sorted((w for w in current if w.ours), key=lambda w: (w.busy, w.last_active))
        out.drain += [(w.id, "over_max") for w in ours[: n - maximum]]
        return out

    keep = max(minimum, out.roll_target)
    for worker in sorted(ready, key=lambda w: w.last_active):
        if n <= keep:
            break
        if worker.busy or now - worker.last_active < ep.idle_timeout or not worker.ours:
            continue
        out.drain.append((worker.id, "idle"))
        n -= 1
    return out
