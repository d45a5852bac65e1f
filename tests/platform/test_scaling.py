"""The autoscaler's policy (``platform/scaling.py``), case by case from a table.

Each case: the endpoint (its settings and load), its serving workers, the time, and the plan
expected (workers to start, workers to drain with why, the rolling update's target after).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from flash_runtime.platform.scaling import EndpointView, WorkerView, plan

NOW = 1000.0


def ready(id: str, **kw: Any) -> WorkerView:
    return replace(WorkerView(id=id, ready=True, outdated=False, last_active=NOW), **kw)


def starting(id: str, **kw: Any) -> WorkerView:
    return replace(WorkerView(id=id, ready=False, outdated=False, last_active=NOW), **kw)


def old(id: str, **kw: Any) -> WorkerView:
    return replace(WorkerView(id=id, ready=True, outdated=True, last_active=NOW), **kw)


@dataclass
class Case:
    name: str
    endpoint: EndpointView
    workers: list[WorkerView] = field(default_factory=list)
    spawn: int = 0
    drain: list[tuple[str, str]] = field(default_factory=list)
    roll_target: int = 0
    now: float = NOW


QB = EndpointView(kind="qb", workers_min=0, workers_max=3, scaler_value=4, idle_timeout=60)
LB = EndpointView(kind="lb", workers_min=0, workers_max=3, scaler_value=2, idle_timeout=60)


def qb(**kw: Any) -> EndpointView:
    return replace(QB, **kw)


def lb(**kw: Any) -> EndpointView:
    return replace(LB, **kw)


CASES = [
    # -- how many
    Case("idle endpoint, nothing to do", qb()),
    Case("workersMin is kept up", qb(workers_min=2), [ready("a")], spawn=1),
    Case("a queued job wakes an empty endpoint", qb(queued=1), spawn=1),
    Case("QUEUE_DELAY: the oldest job waited too long", qb(queued=3, oldest_wait=5), [ready("a")], spawn=1),
    Case("QUEUE_DELAY: not long enough", qb(queued=3, oldest_wait=3), [ready("a")]),
    Case("no second worker while one is starting", qb(queued=9, oldest_wait=99), [starting("a")]),
    Case(
        "REQUEST_COUNT: more jobs than scalerValue per worker",
        qb(scaler_type="REQUEST_COUNT", queued=3, running=2), [ready("a")], spawn=1,
    ),
    Case(
        "REQUEST_COUNT: within scalerValue per worker",
        qb(scaler_type="REQUEST_COUNT", queued=2, running=2), [ready("a")],
    ),
    Case("never past workersMax", qb(workers_max=1, queued=9, oldest_wait=99), [ready("a")]),
    Case("workersMax 0 runs nothing", qb(workers_max=0, workers_min=2, queued=5)),
    Case("crash backoff holds new workers back", qb(queued=1, not_before=NOW + 1)),
    Case("after the backoff it starts one", qb(queued=1, not_before=NOW), spawn=1),
    Case("a waiting request wakes an empty LB endpoint", lb(lb_waiting=1), spawn=1),
    Case("LB: in flight over scalerValue per ready worker", lb(), [ready("a", in_flight=3, busy=3)], spawn=1),
    Case("LB: in flight within scalerValue", lb(), [ready("a", in_flight=2, busy=2)]),
    # -- too many
    Case(
        "workersMax lowered: the least busy of ours go",
        qb(workers_max=1), [ready("a", busy=2), ready("b", busy=0), ready("c", busy=1)],
        drain=[("b", "over_max"), ("c", "over_max")],
    ),
    Case(
        "workersMax lowered: external workers are not ours to drain",
        qb(workers_max=1), [ready("ext", ours=False), ready("b", busy=1)], drain=[("b", "over_max")],
    ),
    # -- idle
    Case("idle past idleTimeout: drained", qb(), [ready("a", last_active=NOW - 61)], drain=[("a", "idle")]),
    Case("idle but not long enough", qb(), [ready("a", last_active=NOW - 59)]),
    Case("busy workers are never idle", qb(), [ready("a", busy=1, last_active=NOW - 600)]),
    Case("the minimum stays", qb(workers_min=1), [ready("a", last_active=NOW - 600)]),
    Case(
        "oldest activity goes first, down to the minimum",
        qb(workers_min=1), [ready("new", last_active=NOW - 100), ready("old", last_active=NOW - 500)],
        drain=[("old", "idle")],
    ),
    Case("external workers are not drained when idle", qb(), [ready("ext", ours=False, last_active=0)]),
    Case("starting workers are not idle", qb(), [starting("a", last_active=0)]),
    # -- boot check
    Case("boot check: a new endpoint starts one worker", qb(boot_check=True), spawn=1),
    Case("boot check: lb too", lb(boot_check=True), spawn=1),
    Case("boot check: one starting is enough", qb(boot_check=True), [starting("a")]),
    Case("boot check: not beyond workersMax 0", qb(workers_max=0, boot_check=True)),
    Case("boot check: waits out the crash backoff", qb(boot_check=True, not_before=NOW + 1)),
    # -- rolling update
    Case(
        "roll: old workers serve until a new one is ready",
        qb(workers_min=1, roll_target=1), [old("o1"), starting("n1")], roll_target=1,
    ),
    Case(
        "roll: a ready new worker retires the old ones",
        qb(workers_min=1, roll_target=1), [old("o1"), old("o2"), ready("n1")],
        drain=[("o1", "outdated"), ("o2", "outdated")],
    ),
    Case(
        "roll: new workers are started up to the target",
        qb(roll_target=2), [old("o1"), old("o2"), starting("n1")], spawn=1, roll_target=2,
    ),
    Case("roll: with workersMax 0 the old ones just go", qb(workers_max=0, roll_target=1), [old("o1")], drain=[("o1", "outdated")]),
    Case("roll done: the target is cleared", qb(roll_target=2), [ready("n1"), ready("n2")]),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_scaling_policy(case: Case) -> None:
    decided = plan(case.endpoint, case.workers, case.now)
    assert (decided.spawn, decided.drain, decided.roll_target) == (
        case.spawn,
        case.drain,
        case.roll_target,
    )


def test_the_plan_changes_nothing_it_is_given() -> None:
    workers = [ready("a", last_active=0), old("o")]
    snapshot = list(workers)
    plan(qb(roll_target=1), workers, NOW)
    assert workers == snapshot
