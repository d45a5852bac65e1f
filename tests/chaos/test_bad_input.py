"""F6, F7: malformed, oversized or over-deep input gets a clear 4xx on every surface (never a
500), and a result that cannot be stored fails its job with the reason."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import build_app
from support import endpoint_spec

from flash_runtime.protocol.wire import bearer
from flash_runtime.testing.net import call, free_port, wait_until
from flash_runtime.testing.platform import InProcessPlatform
from flash_runtime.testing.workers import WorkerProcess, start_worker

EP = "badinput000001"


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Any:
    artifact = build_app("qb_sync", tmp_path_factory.mktemp("apps"))
    with InProcessPlatform(tmp_path_factory.mktemp("home")) as p:
        # workersMax 0: the test drives the worker protocol by hand.
        p.apply(endpoint_spec(EP, "qb-sync", artifact, workers_max=0))
        yield p


def test_the_serverless_api_refuses_what_it_cannot_store(platform: InProcessPlatform) -> None:
    run = f"{platform.url}/v2/{EP}/run"
    key = bearer(platform.config.api_key)
    statuses = {
        "input nested 300 levels": call("POST", run, {"input": nested(300)}, headers=key)[0],
        "executionTimeout 2**63": call(
            "POST", run, {"input": {}, "policy": {"executionTimeout": 2**63}}, headers=key
        )[0],
        "executionTimeout true": call(
            "POST", run, {"input": {}, "policy": {"executionTimeout": True}}, headers=key
        )[0],
        "ttl -1": call("POST", run, {"input": {}, "policy": {"ttl": -1}}, headers=key)[0],
    }
    assert statuses == dict.fromkeys(statuses, 400)
    status, body = call("POST", run, {"input": nested(100)}, headers=key)  # deep, but fine
    assert status == 200 and body["status"] == "IN_QUEUE"
    call("POST", f"{platform.url}/v2/{EP}/purge-queue", headers=key)


def test_a_result_that_cannot_be_stored_fails_the_job(platform: InProcessPlatform) -> None:
    assert platform.runtime is not None
    base = f"{platform.url}/v2/{EP}"
    user, worker = bearer(platform.config.api_key), {"Authorization": platform.runtime.worker_key}
    _, job = call("POST", f"{base}/run", {"input": {}}, headers=user)
    status, taken = call(
        "GET", f"{base}/job-take/w-bad?gpu=local&job_in_progress=0", headers=worker
    )
    assert status == 200 and taken["id"] == job["id"]
    chunk = f"{base}/job-stream/w-bad/{job['id']}?gpu=local&isStream=false"
    assert call("POST", chunk, {"output": nested(300)}, headers=worker)[0] == 400
    done = f"{base}/job-done/w-bad/{job['id']}?gpu=local&isStream=false"
    assert call("POST", done, {"output": nested(300)}, headers=worker)[0] == 200
    final = call("GET", f"{base}/status/{job['id']}", headers=user)[1]
    assert final["status"] == "FAILED"
    assert "UnstorableResult" in json.dumps(final["error"])


def test_a_load_balanced_worker_answers_400_to_a_body_that_is_not_json(tmp_path: Path) -> None:
    artifact = build_app("lb_echo", tmp_path / "apps")
    worker: WorkerProcess = start_worker(artifact, tmp_path / "app", "lb_echo", port=free_port())
    try:

        def ready() -> bool:
            try:
                return call("GET", f"{worker.url}/ping", timeout=2)[0] == 200
            except OSError:
                return False

        wait_until(ready, what="the worker")
        statuses = {}
        for name, data in {
            "malformed": b'{"input_data": {"a": 1,',
            "nested 1000 levels": b'{"input_data": {"x": ' + b"[" * 1000 + b"]" * 1000 + b"}}",
            "not an object": b"[1, 2]",
            "wrong type": b'{"input_data": "x"}',
        }.items():
            request = urllib.request.Request(
                f"{worker.url}/process", data=data, headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    statuses[name] = response.status
            except urllib.error.HTTPError as err:
                statuses[name] = err.code
        assert statuses == {
            "malformed": 400,
            "nested 1000 levels": 400,
            "not an object": 422,
            "wrong type": 422,
        }, worker.log()
    finally:
        worker.stop()
