"""The platform end to end: real workers from real artifacts, called like users call Runpod.

Queue endpoints are called with the official ``runpod`` client pointed at the platform
(``runpod.endpoint_url_base``), load-balanced ones over plain HTTP at their own URL. Endpoints are
applied directly with ``EndpointSpec``s, as the control plane applies them.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import requests
import runpod
from conftest import build_app
from support import endpoint_spec

from flash_runtime.testing.net import wait_until
from flash_runtime.testing.platform import InProcessPlatform

ECHO = "echo0000000001"
SLOW = "slow0000000001"
LIMITED = "limited0000001"
OFFICIAL = "official000001"
COUNT = "count000000001"
LB = "lbecho00000001"
LB_NONE = "lbnone00000001"
LB_BROKEN = "lbbroken000001"
BROKEN = "broken00000001"


spec = endpoint_spec


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessPlatform]:
    apps = tmp_path_factory.mktemp("apps")
    noop = build_app("platform_noop", apps)
    slow = build_app("platform_slow", apps)
    lb = build_app("platform_lb", apps)
    broken = build_app("platform_broken", apps)
    with InProcessPlatform(tmp_path_factory.mktemp("home")) as p:
        p.apply(spec(ECHO, "platform-echo", noop, workers_min=0, workers_max=1, idle_timeout=2))
        p.apply(spec(SLOW, "platform-slow", slow, workers_min=2, workers_max=2))
        p.apply(spec(LIMITED, "platform-slow", slow, workers_max=1, execution_timeout_ms=1000))
        p.apply(spec(COUNT, "platform-count", slow, workers_max=1))
        # workers running the official loop, runpod.serverless.start, instead of ours
        official = {"FLASH_QUEUE_LOOP": "runpod"}
        p.apply(spec(OFFICIAL, "platform-slow", slow, workers_max=1, env=official))
        p.apply(spec(LB, "platform-lb", lb, type="lb", workers_max=2, scaler_value=1))
        p.apply(spec(LB_NONE, "platform-lb", lb, type="lb", workers_max=0))
        p.apply(spec(BROKEN, "platform-broken", broken, workers_min=1, workers_max=1))
        # a queue resource served as load-balanced: its workers refuse to start
        p.apply(spec(LB_BROKEN, "platform-broken", broken, type="lb", workers_max=1))
        yield p


@pytest.fixture
def client(platform: InProcessPlatform, monkeypatch: pytest.MonkeyPatch) -> InProcessPlatform:
    """The official client pointed at the platform, as RUNPOD_ENDPOINT_BASE_URL would."""
    monkeypatch.setattr(runpod, "api_key", platform.config.api_key)
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{platform.url}/v2")
    return platform


def endpoint_status(platform: InProcessPlatform, endpoint_id: str) -> dict[str, Any]:
    return next(e for e in platform.status()["endpoints"] if e["id"] == endpoint_id)


def ready_workers(platform: InProcessPlatform, endpoint_id: str) -> list[dict[str, Any]]:
    return [w for w in endpoint_status(platform, endpoint_id)["workers"] if w["state"] == "ready"]


def test_official_client_from_a_cold_start_to_scale_down(client: InProcessPlatform) -> None:
    # The worker the platform boots once for a new endpoint (its boot check) idles out: the
    # endpoint is at zero.
    wait_until(lambda: not endpoint_status(client, ECHO)["workers"], what="scale to zero")
    endpoint = runpod.Endpoint(ECHO)
    assert endpoint.run_sync({"value": [1, "two"]}, timeout=60) == {"echo": [1, "two"]}

    job = endpoint.run({"value": "async"})
    assert job.status() in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    assert job.output(timeout=30) == {"echo": "async"}
    assert job.status() == "COMPLETED"

    health = endpoint.health()
    assert health["jobs"]["completed"] >= 2
    assert health["workers"]["idle"] + health["workers"]["running"] == 1

    # idleTimeout is 2 s: the worker is drained and the endpoint is back at zero.
    wait_until(lambda: not endpoint_status(client, ECHO)["workers"], what="scale-down")


def test_official_client_errors(client: InProcessPlatform, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(requests.HTTPError) as err:
        runpod.Endpoint("nosuchendpoint").run_sync({"value": 1})
    assert err.value.response is not None and err.value.response.status_code == 404
    monkeypatch.setattr(runpod, "api_key", "wrong key")
    with pytest.raises(RuntimeError, match="401"):
        runpod.Endpoint(ECHO).run({"value": 1})


def test_a_job_whose_worker_is_killed_is_finished_by_another(client: InProcessPlatform) -> None:
    wait_until(lambda: len(ready_workers(client, SLOW)) == 2, what="two ready workers")
    job = runpod.Endpoint(SLOW).run({"seconds": 3, "tag": "kill"})
    first = wait_until(
        lambda: (s := job._fetch_job()).get("status") == "IN_PROGRESS" and s["workerId"],
        what="the job to start",
    )
    victim = next(w for w in endpoint_status(client, SLOW)["workers"] if w["id"] == first)
    os.kill(victim["pid"], signal.SIGKILL)

    output = job.output(timeout=60)
    assert output["tag"] == "kill"
    assert output["worker"] != first
    final = job._fetch_job()
    assert final["status"] == "COMPLETED" and final["workerId"] == output["worker"]
    assert runpod.Endpoint(SLOW).health()["jobs"]["retried"] >= 1
    # and the killed worker is replaced
    wait_until(lambda: len(ready_workers(client, SLOW)) == 2, what="the replacement worker")


def _steps_logged(platform: InProcessPlatform, endpoint_id: str, tag: str) -> int:
    logs = platform.config.logs_dir / endpoint_id
    return sum(f.read_text().count(f"job {tag}: step") for f in logs.glob("*.log"))


def _stop_logged(platform: InProcessPlatform, endpoint_id: str, job_id: str) -> bool:
    """Whether a worker of the endpoint logged that it stopped the job (our job loop's line)."""
    logs = platform.config.logs_dir / endpoint_id
    return any(f"job {job_id} stopped" in f.read_text() for f in logs.glob("*.log"))


def test_cancel_stops_a_running_job(client: InProcessPlatform) -> None:
    job = runpod.Endpoint(SLOW).run({"seconds": 5, "tag": "cancel"})
    wait_until(lambda: _steps_logged(client, SLOW, "cancel") >= 2, what="the job to start")
    assert job.cancel() == {"id": job.job_id, "status": "CANCELLED"}
    assert job.status() == "CANCELLED"
    # The worker stopped the job (its task is gone), well before its 50 steps.
    wait_until(lambda: _stop_logged(client, SLOW, job.job_id), what="the worker to stop the job")
    assert _steps_logged(client, SLOW, "cancel") < 50


def test_execution_timeout_stops_a_job(client: InProcessPlatform) -> None:
    job = runpod.Endpoint(LIMITED).run({"seconds": 5, "tag": "timeout"})  # executionTimeoutMs 1000
    assert job.output(timeout=60) is None
    assert job.status() == "TIMED_OUT"
    wait_until(lambda: _stop_logged(client, LIMITED, job.job_id), what="the worker to stop the job")
    assert _steps_logged(client, LIMITED, "timeout") < 50


def test_the_official_worker_loop_speaks_the_same_protocol(client: InProcessPlatform) -> None:
    endpoint = runpod.Endpoint(OFFICIAL)
    output = endpoint.run_sync({"seconds": 0.1, "tag": "official"}, timeout=60)
    assert output["tag"] == "official"
    job = endpoint.run({"seconds": 5, "tag": "official-cancel"})
    wait_until(lambda: _steps_logged(client, OFFICIAL, "official-cancel") >= 2, what="the job")
    job.cancel()
    assert job.status() == "CANCELLED"
    # The official loop took the stop signal and cancelled the job's task (its own log line).
    wait_until(lambda: _official_stop_logged(client, job.job_id), what="the worker to stop it")
    assert _steps_logged(client, OFFICIAL, "official-cancel") < 50


def _official_stop_logged(platform: InProcessPlatform, job_id: str) -> bool:
    logs = platform.config.logs_dir / OFFICIAL
    return any(
        job_id in line and "Job stopped." in line
        for f in logs.glob("*.log")
        for line in f.read_text().splitlines()
    )


def test_stream_of_a_generator_job(client: InProcessPlatform) -> None:
    job = runpod.Endpoint(COUNT).run({"n": 3})
    assert list(job.stream()) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert job.status() == "COMPLETED"


def test_load_balanced_routes_at_the_root(platform: InProcessPlatform) -> None:
    url = platform.runtime.url_of(LB) if platform.runtime else None
    assert url is not None and url.startswith("http://127.0.0.1:")
    auth = {"Authorization": f"Bearer {platform.config.api_key}"}

    # Scaled to zero: the first request starts a worker and waits for it.
    response = requests.post(f"{url}/echo", json={"data": {"a": 1}}, headers=auth, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == {"a": 1}

    assert requests.post(f"{url}/echo", json={"data": {}}, timeout=10).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (
        requests.post(f"{url}/echo", json={"data": {}}, headers=wrong, timeout=10).status_code
        == 401
    )

    with requests.get(f"{url}/count?n=4", headers=auth, stream=True, timeout=30) as streamed:
        assert streamed.status_code == 200
        body = b"".join(streamed.iter_content(chunk_size=None)).decode()
    for i in range(4):
        assert f'"i":{i}' in body.replace(" ", "")

    missing = requests.get(f"{url}/no/such/route", headers=auth, timeout=10)
    assert missing.status_code == 404


def test_load_balanced_routes_through_the_platform_port(platform: InProcessPlatform) -> None:
    """``{platform}/lb/{id}/...``: the same routes, for URLs derived from the endpoint id."""
    url = f"{platform.url}/lb/{LB}"
    auth = {"Authorization": f"Bearer {platform.config.api_key}"}
    response = requests.post(f"{url}/echo", json={"data": {"b": 2}}, headers=auth, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == {"b": 2}
    with requests.get(f"{url}/count?n=2", headers=auth, stream=True, timeout=30) as streamed:
        body = b"".join(streamed.iter_content(chunk_size=None)).decode().replace(" ", "")
    assert '"i":0' in body and '"i":1' in body
    assert requests.post(f"{url}/echo", json={"data": {}}, timeout=10).status_code == 401
    unknown = requests.get(f"{platform.url}/lb/nosuchendpoint/echo", headers=auth, timeout=10)
    assert unknown.status_code == 404


def test_load_balanced_routes_at_the_runpod_url_shape(platform: InProcessPlatform) -> None:
    """``{id}.{host}``: the shape runpod-flash records (``https://{id}.api.runpod.ai`` on
    Runpod, from RUNPOD_ENDPOINT_BASE_URL's host), served on the platform's port by Host."""
    port = platform.url.rsplit(":", 1)[1]
    auth = {"Authorization": f"Bearer {platform.config.api_key}"}
    by_host = {**auth, "Host": f"{LB}.localhost:{port}"}
    response = requests.post(
        f"{platform.url}/echo", json={"data": {"c": 3}}, headers=by_host, timeout=60
    )
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == {"c": 3}
    no_key = requests.post(
        f"{platform.url}/echo", json={"data": {}}, headers={"Host": by_host["Host"]}, timeout=10
    )
    assert no_key.status_code == 401
    # Any other host is the platform itself.
    other = {**auth, "Host": f"nosuchendpoint.localhost:{port}"}
    assert requests.get(f"{platform.url}/health", headers=other, timeout=10).status_code == 200


def test_load_balanced_requests_spread_over_workers(platform: InProcessPlatform) -> None:
    url = platform.runtime.url_of(LB) if platform.runtime else None
    auth = {"Authorization": f"Bearer {platform.config.api_key}"}
    from concurrent.futures import ThreadPoolExecutor

    def call(_: int) -> str:
        r = requests.get(f"{url}/slow?seconds=0.3", headers=auth, timeout=60)
        assert r.status_code == 200, r.text
        return str(r.json()["worker"])

    # scalerValue 1: more than one request in flight per worker adds a worker (max 2).
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(call, range(8)))
    wait_until(lambda: len(ready_workers(platform, LB)) == 2, what="a second LB worker")
    with ThreadPoolExecutor(4) as pool:
        workers = set(pool.map(call, range(8)))
    assert len(workers) == 2


def test_load_balanced_endpoint_without_workers_answers_503(platform: InProcessPlatform) -> None:
    url = platform.runtime.url_of(LB_NONE) if platform.runtime else None
    auth = {"Authorization": f"Bearer {platform.config.api_key}"}
    response = requests.post(f"{url}/echo", json={"data": {}}, headers=auth, timeout=30)
    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "no worker ready" and body["endpointId"] == LB_NONE


def test_load_balanced_endpoint_whose_worker_fails_answers_503_with_its_log(
    platform: InProcessPlatform,
) -> None:
    url = platform.runtime.url_of(LB_BROKEN) if platform.runtime else None
    auth = {"Authorization": f"Bearer {platform.config.api_key}"}
    response = requests.get(f"{url}/anything", headers=auth, timeout=30)
    assert response.status_code == 503
    error = response.json()["lastError"]
    assert error["beforeReady"] is True and Path(error["log"]).is_file()
    assert error["lastLines"]


def test_a_worker_that_fails_to_boot_is_reported_with_its_log(client: InProcessPlatform) -> None:
    def reported() -> dict[str, Any] | None:
        health = runpod.Endpoint(BROKEN).health()
        return health.get("lastError") if health["workers"]["unhealthy"] else None

    error = wait_until(reported, what="the boot failure")
    assert error["beforeReady"] is True
    assert Path(error["log"]).is_file()
    assert any("fails at import on purpose" in line for line in error["lastLines"])
    assert endpoint_status(client, BROKEN)["health"]["lastError"]["log"] == error["log"]


def test_a_new_build_alone_leaves_running_workers_alone(client: InProcessPlatform) -> None:
    """As on Runpod: workers keep the build they started with; only a template change rolls."""
    assert client.runtime is not None
    ep = client.runtime.endpoints[SLOW]
    wait_until(lambda: len(ready_workers(client, SLOW)) == 2, what="two ready workers")
    before = (ep.generation, {w["id"] for w in ready_workers(client, SLOW)})
    client.apply(replace(ep.spec, build_id="build-only"))
    assert ep.spec.build_id == "build-only"  # what the next worker runs
    assert (ep.generation, {w["id"] for w in ready_workers(client, SLOW)}) == before
    assert not ep.outdated() and ep.roll_target == 0


def test_a_new_template_rolls_the_workers_without_losing_jobs(client: InProcessPlatform) -> None:
    assert client.runtime is not None
    current = client.runtime.endpoints[SLOW].spec
    wait_until(lambda: len(ready_workers(client, SLOW)) == 2, what="two ready workers")
    old = {w["id"] for w in ready_workers(client, SLOW)}
    jobs = [runpod.Endpoint(SLOW).run({"seconds": 0.5, "tag": f"roll{i}"}) for i in range(6)]
    client.apply(replace(current, build_id="build2", template_version="template2"))
    outputs = [job.output(timeout=60) for job in jobs]
    assert [o["tag"] for o in outputs] == [f"roll{i}" for i in range(6)]
    wait_until(
        lambda: (
            len(ready_workers(client, SLOW)) == 2
            and not old & {w["id"] for w in endpoint_status(client, SLOW)["workers"]}
        ),
        what="the old workers to be replaced",
    )
    after = runpod.Endpoint(SLOW).run_sync({"seconds": 0.1, "tag": "after"}, timeout=60)
    assert after["worker"] not in old
