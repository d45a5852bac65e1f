"""A task pod's runner (``worker/task.py``) over HTTP, in-process on a loopback port.

The end-to-end test (``tests/e2e/test_sdk2_apps.py``) runs it in a pod for a real 2.0
``@app.task`` call (cloudpickled arguments); here its routes and failure modes, with the JSON
format (cloudpickle is not in the test environment: its absence is one of the cases).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest

from flash_runtime.testing.net import free_port
from flash_runtime.worker import task

TOKEN = "t0ken"
MODULE = """
import time

class Handle:
    def __init__(self, fn):
        self._fn = fn

def add(a, b):
    print("adding", a, b)
    return a + b

async def slow(seconds):
    import asyncio
    await asyncio.sleep(seconds)
    return "slept"

def count(n):
    for i in range(n):
        yield i

def boom():
    raise ValueError("no luck")

def opaque():
    return object()

wrapped = Handle(add)

if __name__ == "__main__":
    raise SystemExit("never runs in a pod")
"""


@pytest.fixture
def runner() -> Iterator[tuple[str, task.Runner]]:
    state = task.Runner(TOKEN, idle_timeout=600)
    port = free_port()
    server = ThreadingHTTPServer(("127.0.0.1", port), task._handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        server.shutdown()
        server.server_close()


def _call(
    url: str, method: str = "GET", body: Any = None, token: str | None = TOKEN
) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _request(name: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    return {
        "function_name": name,
        "function_code": MODULE,
        "args": list(args),
        "kwargs": kwargs,
        "serialization_format": "json",
    }


def test_ping_is_open_and_everything_else_needs_the_token(
    runner: tuple[str, task.Runner],
) -> None:
    url, _ = runner
    assert _call(f"{url}/ping", token=None) == (200, {"ready": True})
    assert _call(f"{url}/result", token=None)[0] == 401
    assert _call(f"{url}/result", token="wrong")[0] == 401
    assert _call(f"{url}/execute", "POST", _request("add", 1, 2), token=None)[0] == 401
    assert _call(f"{url}/result") == (200, {"status": "NONE", "response": None})
    assert _call(f"{url}/nowhere")[0] == 404


def test_execute_runs_the_module_and_returns_the_result(
    runner: tuple[str, task.Runner],
) -> None:
    url, _ = runner
    status, response = _call(f"{url}/execute", "POST", _request("add", 2, b=3))
    assert status == 200
    assert response == {"success": True, "stdout": "adding 2 3\n", "json_result": 5}
    assert _call(f"{url}/execute", "POST", _request("wrapped", 1, 1))[1]["json_result"] == 2
    assert _call(f"{url}/execute", "POST", _request("slow", 0.01))[1]["json_result"] == "slept"
    assert _call(f"{url}/execute", "POST", _request("count", 3))[1]["json_result"] == [0, 1, 2]


@pytest.mark.parametrize(
    ("request_body", "error"),
    [
        (_request("boom"), "ValueError: no luck"),
        (_request("missing"), "not found"),
        (_request("opaque"), "not JSON serializable"),
        ({**_request("add", 1, 2), "serialization_format": "yaml"}, "unknown serialization"),
        ({"function_name": "add"}, "function_code are required"),
        ({**_request("add", 1, 2), "serialization_format": "cloudpickle"}, "cloudpickle"),
        ({**_request("add", 1, 2), "system_dependencies": ["no-such-tool"]}, "no-such-tool"),
        ([1, 2], "JSON object"),
    ],
)
def test_a_failing_request_is_an_unsuccessful_response(
    runner: tuple[str, task.Runner], request_body: Any, error: str
) -> None:
    url, _ = runner
    status, response = _call(f"{url}/execute", "POST", request_body)
    assert status == 200 and response["success"] is False
    assert error in response["error"]


def test_submit_runs_in_the_background_one_at_a_time(runner: tuple[str, task.Runner]) -> None:
    url, state = runner
    status, ack = _call(f"{url}/submit", "POST", {**_request("slow", 0.5), "timeout": 30})
    assert status == 200 and ack == {"status": "RUNNING", "timeout": 30}
    assert state.timeout == 30.0
    assert _call(f"{url}/submit", "POST", _request("add", 1, 2))[0] == 409
    assert _call(f"{url}/timeout", "POST", {"timeout": 12.5}) == (200, {"timeout": 12.5})
    assert _call(f"{url}/timeout", "POST", {"timeout": -1})[0] == 400
    assert _call(f"{url}/timeout", "POST", b"{nope")[0] == 400
    deadline = time.monotonic() + 10
    while (result := _call(f"{url}/result")[1])["status"] != "DONE":
        assert result["status"] == "RUNNING" and time.monotonic() < deadline
        time.sleep(0.05)
    assert result["response"]["json_result"] == "slept"
    assert not state.abandoned()


def test_a_runner_nobody_comes_back_to_is_abandoned() -> None:
    state = task.Runner(TOKEN, idle_timeout=0.05)
    assert not state.abandoned()
    time.sleep(0.1)
    assert state.abandoned()
    state.status = "RUNNING"
    assert not state.abandoned()  # never while it runs
