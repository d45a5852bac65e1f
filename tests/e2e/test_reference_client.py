"""runpod-flash 1.21's own CLI against the local platform: the reference deploys, redeploys new
code, changes its configuration, calls what it deployed, and deletes it all, exactly as it would
on Runpod. The reference lives in a virtual environment of its own under ``build/`` (made once,
with pip); our platform runs in a temporary FLASH_HOME on a free port.

The slowest test of the suite: a dozen runs of the reference's CLI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import runpod
from conftest import APPS
from support import FlashCLI

from flash_runtime.protocol.wire import bearer
from flash_runtime.testing.net import call, wait_until
from flash_runtime.testing.reference import PY, ReferenceEnv, default_root, ensure_reference

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def reference() -> ReferenceEnv:
    return ensure_reference(default_root(REPO / "build"))


@dataclass
class Setup:
    url: str  # the platform
    port: int
    key: str
    app: Path  # the project the reference deploys
    run: Callable[..., subprocess.CompletedProcess[str]]  # the reference's CLI in it
    status: Callable[[], dict[str, Any]]  # our `flash platform status --json`


@pytest.fixture
def setup(reference: ReferenceEnv, tmp_path: Path) -> Iterator[Setup]:
    # The official images' environment its workers run in is kept between runs (conftest).
    ours = FlashCLI(tmp_path / "flash_home", tmp_path)
    url, port = ours.url, int(ours.url.rsplit(":", 1)[1])
    ours("platform", "start")
    key = ours.status()["api_key"]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    home = tmp_path / "home"  # the reference keeps its own state under HOME
    home.mkdir()
    theirs = reference.env(
        {
            **base,
            "HOME": str(home),
            "RUNPOD_API_KEY": key,
            "RUNPOD_API_BASE_URL": url,
            # runpod-flash derives a load-balanced endpoint's URL from this host:
            # https://{id}.localhost:{port}, which the platform serves (over http).
            "RUNPOD_ENDPOINT_BASE_URL": f"http://localhost:{port}/v2",
            "RUNPOD_URL_MIXED_OK": "1",
        }
    )
    app = tmp_path / "refapp"
    shutil.copytree(APPS / "reference_app", app)

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [reference.flash, *args],
            cwd=app,
            env=theirs,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    try:
        yield Setup(url, port, key, app, run, ours.status)
    finally:
        ours.stop()


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.timeout(600)
def test_the_reference_client_deploys_redeploys_and_deletes(setup: Setup) -> None:
    s = setup

    # Its default Python (3.12) is one the platform cannot run: refused at deploy, not a crash
    # loop afterwards.
    refused = s.run("deploy")
    assert refused.returncode != 0
    assert "Python 3.12" in refused.stdout + refused.stderr

    ok(s.run("deploy", "--python-version", PY))
    urls = json.loads((s.app / ".flash" / "flash_manifest.json").read_text())["resources_endpoints"]
    worker_id = urls["ref_worker"].rsplit("/", 1)[1]
    assert urls["ref_worker"] == f"http://localhost:{s.port}/v2/{worker_id}"
    lb = urlsplit(urls["ref_api"])
    assert lb.scheme == "https" and re.fullmatch(rf"[a-z0-9]{{14}}\.localhost:{s.port}", lb.netloc)
    api_id = lb.netloc.split(".", 1)[0]

    runpod.endpoint_url_base = f"{s.url}/v2"
    worker = runpod.Endpoint(worker_id, api_key=s.key)

    def release_of_api() -> Any:
        # The recorded URL, over http: the Host header names the endpoint.
        status, body = call("GET", f"{s.url}/release", headers={**bearer(s.key), "Host": lb.netloc})
        return body.get("release") if status == 200 and isinstance(body, dict) else None

    assert worker.run_sync({"text": "hi"}, timeout=60) == {"shout": "HI", "release": "v1"}
    wait_until(lambda: release_of_api() == "v1", what="the API's first release")
    # Its load-balanced worker (the official image's entry) answers its balancer only.
    (api_status,) = [e for e in s.status()["endpoints"] if e["id"] == api_id]
    port = next(w["port"] for w in api_status["workers"] if w.get("port"))
    assert call("GET", f"http://127.0.0.1:{port}/release")[0] == 401

    # A code-only redeploy: the reference puts the new source fingerprint in each template env
    # (saveEndpoint with templateId, then saveTemplate), and the platform rolls the workers.
    for name in ("worker.py", "api.py"):
        path = s.app / name
        path.write_text(path.read_text().replace('RELEASE = "v1"', 'RELEASE = "v2"'))
    ok(s.run("deploy", "--python-version", PY))
    # The reference does not wait for the workers after a deploy: poll until the new code answers.
    wait_until(
        lambda: worker.run_sync({"text": "x"}, timeout=60)["release"] == "v2",
        timeout=60,
        what="the worker's new code",
    )
    wait_until(lambda: release_of_api() == "v2", timeout=60, what="the API's new code")

    # A config change: the same endpoint, its template updated in place.
    query = """query q($id: String!) { myself { endpoint(id: $id) {
        workersMax templateId template { name } } } }"""

    def api_endpoint() -> dict[str, Any]:
        status, body = call(
            "POST",
            f"{s.url}/graphql",
            {"query": query, "variables": {"id": api_id}},
            headers=bearer(s.key),
        )
        assert status == 200 and not body.get("errors"), body
        endpoint: dict[str, Any] = body["data"]["myself"]["endpoint"]
        return endpoint

    before = api_endpoint()
    api = s.app / "api.py"
    api.write_text(api.read_text().replace("workers=(1, 2)", "workers=(1, 3)"))
    ok(s.run("deploy", "--python-version", PY))
    after = api_endpoint()
    assert (before["workersMax"], after["workersMax"]) == (2, 3)
    assert after["templateId"] == before["templateId"]
    wait_until(lambda: release_of_api() == "v2", timeout=60, what="the API after the change")

    # Its app and environment commands read what the platform holds.
    app_name = json.loads((s.app / ".flash" / "flash_manifest.json").read_text())["project_name"]
    assert app_name in ok(s.run("app", "list"))
    assert "production" in ok(s.run("env", "list", "--app", app_name))
    shown = ok(s.run("env", "get", "production", "--app", app_name))
    assert worker_id in shown and api_id in shown

    # And it deletes everything it made.
    assert "deleted 2/2 endpoints" in ok(s.run("undeploy", "--all", "--force"))
    status, body = call(
        "POST",
        f"{s.url}/graphql",
        {"query": "{ myself { endpoints { id } } }"},
        headers=bearer(s.key),
    )
    assert status == 200 and body["data"]["myself"]["endpoints"] == []
    ok(s.run("env", "delete", "production", "--app", app_name, stdin="y\n"))
    ok(s.run("app", "delete", app_name, stdin="y\n"))
    assert "no apps found" in ok(s.run("app", "list"))
