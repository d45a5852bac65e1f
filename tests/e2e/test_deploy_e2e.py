"""``flash deploy`` end to end: the CLI in a subprocess, the real platform (started by the deploy
on a free loopback port in a temporary FLASH_HOME), real workers booted from the artifact. Load-
balanced routes are called over HTTP, queue-based endpoints with the official ``runpod`` client.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import runpod
from conftest import APPS
from support import FlashCLI, request

FLASH = [sys.executable, "-c", "from flash_runtime.cli import main; main()"]


class Platform(FlashCLI):
    """How to run ``flash`` against one private platform."""

    def flash(
        self, *args: str, cwd: Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run(*args, cwd=cwd, timeout=timeout)

    def deploy(self, project: Path, *args: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("deploy", "--json", *args, cwd=project))
        return result

    @property
    def api_key(self) -> str:
        return str(self.status()["api_key"])


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    platform = Platform(tmp_path / "flash_home", tmp_path, FLASH_PLATFORM_DRAIN_GRACE_S="5")
    try:
        yield platform
    finally:
        platform.stop()


def project(tmp_path: Path, name: str = "shop") -> Path:
    target = tmp_path / name
    shutil.copytree(APPS / "deploy_shop", target)
    return target


def eventually(check: Callable[..., Any], timeout: float = 60) -> Any:
    """``check()``'s first truthy value; rolling workers onto a new build takes a moment."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def endpoints(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {ep["resource"]: ep for ep in result["endpoints"]}


def run_sync(platform: Platform, key: str, endpoint_id: str, payload: dict[str, Any]) -> Any:
    """A queue-based call through the official client, pointed at the local platform."""
    runpod.endpoint_url_base = f"{platform.url}/v2"
    return runpod.Endpoint(endpoint_id, api_key=key).run_sync(payload, timeout=60)


def test_deploy_two_environments_and_redeploy_one(platform: Platform, tmp_path: Path) -> None:
    shop = project(tmp_path)
    dev = endpoints(platform.deploy(shop, "--env", "dev"))
    production = endpoints(platform.deploy(shop, "--env", "production"))
    key = platform.api_key
    assert sorted(dev) == sorted(production) == ["api", "jobs", "worker"]

    for eps in (dev, production):
        api = eps["api"]["url"]
        assert request("GET", f"{api}/release", key) == (200, {"release": "v1"})
        assert request("POST", f"{api}/echo", key, {"text": "hi"}) == (
            200,
            {"echo": "hi", "release": "v1"},
        )
        assert request("GET", f"{api}/release", "wrong-key")[0] == 401
        shout = run_sync(platform, key, eps["worker"]["id"], {"text": "hi"})
        assert shout == {"shout": "HI", "release": "v1"}

    # A job dev's worker has accepted and is running when the next release goes out.
    runpod.endpoint_url_base = f"{platform.url}/v2"
    running = runpod.Endpoint(dev["worker"]["id"], api_key=key).run({"text": "late", "delay": 3})
    assert eventually(lambda: running.status() == "IN_PROGRESS", timeout=30)

    # A new release of dev: new code everywhere, one endpoint gone.
    for name in ("api.py", "worker.py"):
        path = shop / name
        path.write_text(path.read_text().replace('RELEASE = "v1"', 'RELEASE = "v2"'))
    (shop / "jobs.py").unlink()
    started = time.perf_counter()
    redeployed = platform.deploy(shop, "--env", "dev")
    deployed = time.perf_counter()
    assert redeployed["removed"] == ["jobs"]
    dev2 = endpoints(redeployed)
    assert {name: ep["id"] for name, ep in dev2.items()} == {
        name: dev[name]["id"] for name in ("api", "worker")
    }

    # The code changed, so every template did (its source fingerprint): the workers rolled, and
    # the deploy returned once the new ones were ready, so the new release answers at once.
    dev_api = dev2["api"]["url"]
    assert request("GET", f"{dev_api}/release", key) == (200, {"release": "v2"})
    answered = time.perf_counter()
    dev_worker = dev2["worker"]["id"]
    assert run_sync(platform, key, dev_worker, {"text": "x"})["release"] == "v2"
    assert running.output(timeout=60) == {"shout": "LATE", "release": "v1"}  # not lost
    print(
        f"\ncode-only redeploy: flash deploy {deployed - started:.2f}s, new code answering "
        f"{answered - started:.2f}s after it started"
    )

    # production did not move: same endpoints, same code, its removed-in-dev endpoint still up.
    assert request("GET", f"{production['api']['url']}/release", key) == (200, {"release": "v1"})
    assert run_sync(platform, key, production["worker"]["id"], {"text": "x"})["release"] == "v1"
    assert run_sync(platform, key, production["jobs"]["id"], {"items": [1, 2]}) == {"count": 2}
    listed = platform.flash("env", "get", "production", "--app", "shop", "--json", cwd=shop)
    assert {ep["id"] for ep in json.loads(listed.stdout)["endpoints"]} == {
        ep["id"] for ep in production.values()
    }


def test_init_template_from_deploy_to_first_call(platform: Platform, tmp_path: Path) -> None:
    """The number the closing note reports: `flash deploy` of the `flash init` template until
    its first successful call (printed; nothing is asserted about the time)."""
    usage = platform.flash("init", cwd=tmp_path)  # no NAME: its help, as runpod-flash does
    assert usage.returncode == 0 and "init [OPTIONS] [NAME]" in usage.stdout
    version = platform.flash("-v", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("flash, version")
    assert platform.flash("init", "hello", cwd=tmp_path).returncode == 0
    hello = tmp_path / "hello"
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    started = time.perf_counter()
    # runpod-flash's deploy flags: -e, --python-version, -o
    out = tmp_path / "hello.tar.gz"
    done = platform.flash(
        "deploy", "-e", "first", "--python-version", python, "-o", str(out), cwd=hello
    )
    assert done.returncode == 0, done.stderr
    assert "Deployment Complete" in done.stdout and "curl -X POST" in done.stdout
    deployed = time.perf_counter()
    assert out.is_file() and not (hello / ".flash" / "artifact.tar.gz").exists()
    manifest = json.loads((hello / ".flash/flash_manifest.json").read_text())
    assert manifest["python_version"] == python
    lb = manifest["resources_endpoints"]["lb_worker"]
    key = json.loads(platform.flash("platform", "status", "--json", cwd=hello).stdout)["api_key"]
    status, body = request("POST", f"{lb}/process", key, {"input_data": {"hello": "world"}})
    called = time.perf_counter()
    assert status == 200 and body["echo"] == {"hello": "world"}
    cpu = manifest["resources_endpoints"]["cpu_worker"].rsplit("/", 1)[1]
    words = run_sync(platform, key, cpu, {"input_data": {"text": "a b a"}})
    queued = time.perf_counter()
    assert words["words"] == 3
    print(
        f"\nflash deploy (incl. platform start) {deployed - started:.2f}s; first LB call "
        f"{called - deployed:.2f}s later ({called - started:.2f}s total); first QB call "
        f"(cold worker) {queued - called:.2f}s later"
    )


def graphql(platform: Platform, key: str, query: str, **variables: Any) -> Any:
    status, body = request(
        "POST", f"{platform.url}/graphql", key, {"query": query, "variables": variables}
    )
    assert status == 200 and not body.get("errors"), body
    return body["data"]


def test_a_config_change_updates_the_template_in_place(platform: Platform, tmp_path: Path) -> None:
    shop = project(tmp_path)
    first = endpoints(platform.deploy(shop))
    key = platform.api_key
    query = """query q($id: String!) { myself { endpoint(id: $id) {
        templateId workersMax template { name env { key value } } } } }"""
    before = graphql(platform, key, query, id=first["worker"]["id"])["myself"]["endpoint"]

    worker = shop / "worker.py"
    worker.write_text(worker.read_text().replace("workers=(0, 1)", "workers=(0, 2)"))
    second = endpoints(platform.deploy(shop))
    assert second["worker"]["id"] == first["worker"]["id"]
    after = graphql(platform, key, query, id=first["worker"]["id"])["myself"]["endpoint"]
    assert after["templateId"] == before["templateId"]  # saved in place, not a new template
    assert after["template"]["name"] == before["template"]["name"]
    assert (before["workersMax"], after["workersMax"]) == (1, 2)

    def fingerprint(endpoint: dict[str, Any]) -> str:
        env = {kv["key"]: kv["value"] for kv in endpoint["template"]["env"]}
        return str(env["_FLASH_SOURCE_FINGERPRINT"])

    assert fingerprint(after) != fingerprint(before)
    assert run_sync(platform, key, first["worker"]["id"], {"text": "x"})["shout"] == "X"


def test_a_worker_that_crashes_at_start_fails_the_deploy(
    platform: Platform, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(APPS / "platform_broken", broken)
    done = platform.flash("deploy", cwd=broken)
    assert done.returncode == 1, done.stdout
    assert "endpoint 'platform-broken'" in done.stderr
    assert "before it was ready" in done.stderr
    assert "platform_broken fails at import on purpose" in done.stderr  # its log's last lines
    assert "Deployment Complete" not in done.stdout
    listed = platform.flash("env", "get", "production", "--app", "broken", "--json", cwd=broken)
    assert json.loads(listed.stdout)["state"] == "failed"
    # --no-wait does not look at the workers (and here nothing changed since).
    assert platform.flash("deploy", "--no-wait", cwd=broken).returncode == 0


def test_a_worker_never_ready_fails_the_deploy_with_what_its_ping_answers(
    platform: Platform, tmp_path: Path
) -> None:
    hung = tmp_path / "hung"
    shutil.copytree(APPS / "lb_never_ready", hung)
    done = platform.flash("deploy", "--wait-timeout", "3", cwd=hung)
    assert done.returncode == 1, done.stdout
    assert "lb_never_ready (" in done.stderr and "no worker was ready after 3s" in done.stderr
    # the worker still starting, named with how long, its /ping's last answer and its log
    assert "its /ping last answered 204 (still loading its code)" in done.stderr, done.stderr
    log = done.stderr.split("; log: ", 1)[1].split()[0]
    assert Path(log).is_file()
    assert "Deployment Complete" not in done.stdout


def test_deploy_without_a_running_platform_starts_it_and_errors_are_actionable(
    platform: Platform, tmp_path: Path
) -> None:
    shop = project(tmp_path)
    listed = platform.flash("app", "list", cwd=shop)
    assert listed.returncode == 1 and "flash platform start" in listed.stderr
    platform.deploy(shop)
    assert platform.flash("app", "list", "--json", cwd=shop).returncode == 0
    gone = platform.flash("env", "get", "nope", cwd=shop)
    assert gone.returncode == 1 and "app 'shop' has no environment 'nope'" in gone.stderr


def test_apps_environments_and_queued_jobs_survive_a_platform_restart(
    platform: Platform, tmp_path: Path
) -> None:
    shop = project(tmp_path)
    dev = endpoints(platform.deploy(shop, "--env", "dev"))
    production = endpoints(platform.deploy(shop, "--env", "production"))
    key = platform.api_key
    before = json.loads(platform.flash("app", "get", "shop", "--json", cwd=shop).stdout)

    # One job running and one waiting behind it (one worker, one slot) when the platform dies.
    runpod.endpoint_url_base = f"{platform.url}/v2"
    worker = runpod.Endpoint(production["worker"]["id"], api_key=key)
    running = worker.run({"text": "first", "delay": 2})
    assert eventually(lambda: running.status() == "IN_PROGRESS", timeout=30)
    waiting = worker.run({"text": "second"})
    assert waiting.status() == "IN_QUEUE"
    status = json.loads(platform.flash("platform", "status", "--json", cwd=shop).stdout)
    os.kill(status["pid"], 9)  # a crash: nothing is shut down cleanly
    assert eventually(
        lambda: (
            json.loads(platform.flash("platform", "status", "--json", cwd=shop).stdout)["running"]
            is False
        ),
        timeout=15,
    )

    assert platform.flash("platform", "start", cwd=shop).returncode == 0
    after = json.loads(platform.flash("app", "get", "shop", "--json", cwd=shop).stdout)
    assert after == before  # the app, both environments and their active builds
    assert running.output(timeout=90) == {"shout": "FIRST", "release": "v1"}
    assert waiting.output(timeout=90) == {"shout": "SECOND", "release": "v1"}
    for eps in (dev, production):
        api = eps["api"]["url"]
        assert eventually(lambda api=api: request("GET", f"{api}/release", key)[0] == 200)
        assert run_sync(platform, key, eps["jobs"]["id"], {"items": [1]}) == {"count": 1}
