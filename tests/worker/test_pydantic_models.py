"""Pydantic models in signatures, through a real load-balanced worker over HTTP (the queue side:
``test_queue_worker.py``), the FastAPI way: validated instances, 422 naming the field, a
lone model taking the whole body, models returned as JSON). Pydantic stays unimported unless a
signature uses it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from conftest import build_app

from flash_runtime.testing.net import free_port
from flash_runtime.testing.workers import WorkerProcess, start_worker


def _call(method: str, url: str, body: Any) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_routes_validate_models_and_take_fastapis_body_shape(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    artifact = build_app("pydantic_models", tmp_path)
    worker = start_worker(artifact, tmp_path / "app", "models-api", port=free_port())
    workers.append(worker)
    url = worker.url
    deadline = time.monotonic() + 30
    status = 0
    while status != 200:  # 204 while it loads user code, 200 once ready (Runpod's contract)
        assert time.monotonic() < deadline, worker.log()
        time.sleep(0.05)
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                status = response.status
        except OSError:
            status = 0
    assert _call("POST", f"{url}/items", {"name": "lamp", "price": 9.5}) == (
        200,
        {"name": "Lamp", "price": 9.5, "tags": []},
    )
    # the embedded form, {"item": {...}}, works too
    assert (
        _call("POST", f"{url}/items", {"item": {"name": "desk", "price": 1}})[1]["name"] == "Desk"
    )
    status, body = _call("POST", f"{url}/items", {"name": "lamp", "price": -1})
    assert status == 422 and body["field"] == "item.price", body
    assert "greater than 0" in body["message"]
    status, body = _call("POST", f"{url}/items", {"price": 3})
    assert status == 422 and body["field"] == "item.name", body
    assert _call("PUT", f"{url}/items/7", {"name": "cup", "price": 2}) == (
        200,
        {"id": 7, "item": {"name": "cup", "price": 2.0, "tags": []}, "kind": "Item"},
    )
    status, quote = _call(
        "POST",
        f"{url}/orders",
        {"customer": "ada", "items": [{"name": "a", "price": 1}, {"name": "b", "price": 2}]},
    )
    assert (status, quote["total"], quote["item"]["name"]) == (200, 3.0, "a")
    status, body = _call("POST", f"{url}/orders", {"customer": "ada", "items": [{"name": "a"}]})
    assert status == 422 and body["field"] == "items.0.price", body


def test_pydantic_is_imported_only_for_signatures_that_use_it() -> None:
    code = (
        "import sys\n"
        "from flash_runtime.worker.arguments import ArgSpec\n"
        "def f(a: int, b: list[str]) -> None: ...\n"
        "ArgSpec(f)\n"
        "print('pydantic' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
