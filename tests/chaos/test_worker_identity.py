"""F3, F5: a worker's credential is its own. A load-balanced worker's port answers only its
balancer; a queue worker's key takes jobs of its endpoint as itself, and nothing else: not
another endpoint's jobs, not another worker's pings, not another worker's results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from conftest import build_app
from support import endpoint_spec

from flash_runtime.protocol.wire import bearer
from flash_runtime.testing.net import call, wait_until
from flash_runtime.testing.platform import InProcessPlatform

LB = "identitylb0001"
QB = "identityqb0001"
OTHER = "identityqb0002"


spec = endpoint_spec


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessPlatform]:
    apps = tmp_path_factory.mktemp("apps")
    lb, qb = build_app("platform_lb", apps), build_app("qb_sync", apps)
    with InProcessPlatform(tmp_path_factory.mktemp("home")) as p:
        p.apply(spec(LB, "platform-lb", lb, type="lb", workers_min=1, workers_max=1))
        p.apply(spec(QB, "qb-sync", qb, workers_min=1, workers_max=1))
        p.apply(spec(OTHER, "qb-sync", qb, workers_max=0))  # hand-driven workers only
        yield p


def ready_worker(platform: InProcessPlatform, endpoint: str) -> Any:
    assert platform.runtime is not None
    ep = platform.runtime.endpoints[endpoint]
    return wait_until(
        lambda: next((w for w in ep.workers.values() if w.state.value == "ready"), None),
        what=f"a ready worker of {endpoint}",
    )


def test_a_load_balanced_workers_port_answers_only_its_balancer(
    platform: InProcessPlatform,
) -> None:
    assert platform.runtime is not None
    worker = ready_worker(platform, LB)
    direct = f"http://127.0.0.1:{worker.port}"
    assert call("GET", f"{direct}/ping")[0] == 401
    assert call("POST", f"{direct}/echo", {"data": {}})[0] == 401
    user_key = bearer(platform.config.api_key)
    assert call("POST", f"{direct}/echo", {"data": {}}, headers=user_key)[0] == 401
    through = call(
        "POST", f"{platform.runtime.url_of(LB)}/echo", {"data": {"a": 1}}, headers=user_key
    )
    assert through[0] == 200 and through[1]["echo"] == {"a": 1}


def test_a_queue_workers_key_is_good_for_itself_only(platform: InProcessPlatform) -> None:
    assert platform.runtime is not None
    worker = ready_worker(platform, QB)
    own = {"Authorization": worker.key}
    base = platform.url + "/v2"

    def url(endpoint: str, kind: str, worker_id: str, job: str = "") -> str:
        tail = f"/{job}" if job else ""
        return f"{base}/{endpoint}/{kind}/{worker_id}{tail}?gpu=local&job_in_progress=0"

    # Another endpoint's jobs, another worker's pings and takes: refused.
    assert (
        call("GET", url(OTHER, "job-take-batch", worker.id) + "&batch_size=5", headers=own)[0]
        == 403
    )
    assert call("GET", url(QB, "ping", "fake-worker") + "&runpod_version=1", headers=own)[0] == 403
    assert call("GET", url(QB, "job-take", "fake-worker"), headers=own)[0] == 403
    assert (
        call("GET", url(QB, "job-take", worker.id), headers={"Authorization": "wk_guess"})[0] == 401
    )

    # A job held by an external worker: no one else may post its result or stream into it.
    user, external = bearer(platform.config.api_key), {"Authorization": platform.runtime.worker_key}
    _, job = call("POST", f"{base}/{OTHER}/run", {"input": {"name": "x"}}, headers=user)
    status, taken = call("GET", url(OTHER, "job-take", "holder"), headers=external)
    assert status == 200 and taken["id"] == job["id"]
    forged = {"output": {"forged": True}}
    assert call("POST", url(OTHER, "job-done", worker.id, job["id"]), forged, headers=own)[0] == 403
    assert (
        call("POST", url(OTHER, "job-done", "intruder", job["id"]), forged, headers=external)[0]
        == 403
    )
    assert (
        call("POST", url(OTHER, "job-stream", "intruder", job["id"]), forged, headers=external)[0]
        == 403
    )
    real = {"output": {"real": True}}
    assert (
        call("POST", url(OTHER, "job-done", "holder", job["id"]), real, headers=external)[0] == 200
    )
    final = call("GET", f"{base}/{OTHER}/status/{job['id']}", headers=user)[1]
    assert final["status"] == "COMPLETED" and final["output"] == {"real": True}
