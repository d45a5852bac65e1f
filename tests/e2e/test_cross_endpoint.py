"""Cross-endpoint calls end to end: two apps deployed by the Runpod-target deployer (its GraphQL
base pointed at the local platform with ``RUNPOD_API_BASE_URL``), real workers booted from the
artifacts by the platform, calls made over HTTP as a client would. Discovery is checked against
the request log of the platform's control plane (``/platform/graphql``).

The module shares one platform and one deploy of each app; the tests that take endpoints away
come last.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS
from support import request

from flash_runtime import RemoteCallError
from flash_runtime.calls.client import RemoteClient
from flash_runtime.deploy.deployer import DeployResult, deploy
from flash_runtime.protocol.controlplane import ControlPlaneClient
from flash_runtime.protocol.local import PlatformConfig
from flash_runtime.protocol.target import Target, runpod_target
from flash_runtime.testing.platform import InProcessPlatform


@dataclass
class Deployed:
    platform: InProcessPlatform
    target: Target
    home: Path
    projects: dict[str, Path]
    apps: dict[str, DeployResult]

    @property
    def key(self) -> str:
        return self.platform.config.api_key

    def url(self, app: str, resource: str) -> str:
        return next(ep.url for ep in self.apps[app].endpoints if ep.resource == resource)

    def request(self, method: str, url: str, body: Any = None) -> tuple[int, Any]:
        status, answer = request(method, url, self.key, body)
        return status, json.loads(answer) if isinstance(answer, str) else answer

    def run_sync(self, app: str, resource: str, payload: dict[str, Any]) -> dict[str, Any]:
        status, job = self.request("POST", f"{self.url(app, resource)}/runsync", {"input": payload})
        assert status == 200, job
        assert isinstance(job, dict)
        return job

    def graphql_log(self, available: bool | None = None) -> dict[str, int]:
        """What the platform's /graphql received, by operation (and switch it on or off)."""
        body = None if available is None else {"available": available}
        status, log = self.request(
            "GET" if body is None else "POST", f"{self.platform.url}/platform/graphql", body
        )
        assert status == 200, log
        received: dict[str, int] = log["received"]
        return received

    def script_env(self, **extra: str) -> dict[str, str]:
        """A plain Python process on the developer's machine, configured for this platform."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
        env.update(
            FLASH_HOME=str(self.home),
            FLASH_PLATFORM_URL=self.platform.url,
            FLASH_CREDENTIALS_FILE=str(self.home / "runpod_config.toml"),
            **extra,
        )
        return env


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployed]:
    root = tmp_path_factory.mktemp("cross")
    home = root / "flash_home"
    key = PlatformConfig.load(home).api_key  # the key a script on this machine reads too
    with InProcessPlatform(home, api_key=key) as platform, pytest.MonkeyPatch.context() as mp:
        # `flash deploy --platform runpod`, with Runpod's API base moved to the local platform.
        mp.setenv("FLASH_HOME", str(home))
        mp.setenv("RUNPOD_API_KEY", key)
        mp.setenv("RUNPOD_API_BASE_URL", platform.url)
        mp.setenv("RUNPOD_ENDPOINT_BASE_URL", f"{platform.url}/v2")
        target = runpod_target()
        projects, apps = {}, {}
        for name in ("cross_mixed", "cross_chain"):
            projects[name] = root / name
            shutil.copytree(APPS / name, projects[name])
            apps[name] = deploy(projects[name], target)
        yield Deployed(platform, target, home, projects, apps)


def _templates(deployed: Deployed, app: str) -> dict[str, dict[str, Any]]:
    """Each endpoint's template (image, env) as the control plane stored it."""
    query = """query q($id: String!) { myself { endpoint(id: $id) {
        name template { imageName env { key value } } } } }"""

    async def fetch() -> dict[str, dict[str, Any]]:
        out = {}
        async with ControlPlaneClient(deployed.target) as client:
            for ep in deployed.apps[app].endpoints:
                data = await client.execute(query, {"id": ep.id})
                template = data["myself"]["endpoint"]["template"]
                env = {kv["key"]: kv["value"] for kv in template["env"]}
                out[ep.resource] = {"image": template["imageName"], "env": env}
        return out

    return asyncio.run(fetch())


def test_runpod_target_deploys_with_runpod_images_and_keys_only_for_callers(
    deployed: Deployed,
) -> None:
    mixed = _templates(deployed, "cross_mixed")
    py = f"py{sys.version_info.major}.{sys.version_info.minor}"
    assert mixed["public-api"]["image"] == f"runpod/flash-lb-cpu:{py}-latest"
    assert mixed["gpu-backend"]["image"] == f"runpod/flash:{py}-latest"
    chain = _templates(deployed, "cross_chain")
    callers = {
        name
        for templates in (mixed, chain)
        for name, template in templates.items()
        if {"RUNPOD_API_KEY", "FLASH_ENVIRONMENT_ID"} <= set(template["env"])
    }
    assert callers == {"public-api", "pipeline"}
    assert not any("RUNPOD_API_KEY" in t["env"] for n, t in chain.items() if n != "pipeline")


def test_calls_between_endpoints_and_discovery_once_per_target(deployed: Deployed) -> None:
    """Scenario 4 (an LB route calls a QB GPU function) and a QB function calling a plain-def
    QB function, LB routes (POST body; GET query and path parameter) and a class endpoint."""
    before = deployed.graphql_log().get("discoverFlashEnvironment", 0)
    api = deployed.url("cross_mixed", "public-api")
    assert deployed.request("GET", f"{api}/health") == (
        200,
        {"status": "ok", "client_loaded": True},
    )
    for i in range(3):
        status, body = deployed.request("POST", f"{api}/process", {"data": {"values": [1, 2, i]}})
        assert status == 200, body
        assert body["served_by"] == "public-api"
        result = body["result"]
        assert result["sum"] == 3 + i and result["ran_on"] == "gpu-backend"
        # The GPU backend calls nobody: it never loaded the client and has no key.
        assert not result["client_loaded"] and not result["has_key"]

    for i in range(3):
        job = deployed.run_sync("cross_chain", "pipeline", {"text": "To be or not TO BE"})
        assert job["status"] == "COMPLETED", job
        assert job["output"] == {
            "tokens": ["to", "be", "or", "not", "to", "be"],
            "counts": {"to": 2, "be": 2, "or": 1, "not": 1},
            "echo": {"echo": "hi hi"},
            "tally": 6 * (i + 1),  # one Counter instance on the counter's worker
            "client_loaded": True,
        }

    # One caller worker each: public-api asked for gpu-backend once, the pipeline once for
    # each of tokenizer, stats and counter, however many calls they made.
    assert deployed.graphql_log()["discoverFlashEnvironment"] - before == 4


def test_remote_errors_carry_the_remote_type_and_message(deployed: Deployed) -> None:
    api = deployed.url("cross_mixed", "public-api")
    status, body = deployed.request("POST", f"{api}/process", {"data": {"fail": "x"}})
    assert status == 500
    assert body["error"] == "RemoteCallError"
    assert (
        "call to endpoint 'gpu-backend' failed (remote_error): ValueError: cannot compute 'x'"
        in (body["message"])
    )


def _script(
    deployed: Deployed, code: str, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd or deployed.projects["cross_chain"],
        env=deployed.script_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CALLER = """
import asyncio, json
from flash_runtime import RemoteCallError
from counter import Counter
from pipeline import pipeline
from tokenizer import explode, tokenize

async def main():
    out = {"pipeline": await pipeline("A b a"), "tokens": await tokenize("X y")}
    out["added"] = await Counter().add(k=100)
    try:
        await explode("no")
    except RemoteCallError as err:
        out["error"] = [err.endpoint, err.cause, err.remote_type, err.remote_message]
    return out

print(json.dumps(asyncio.run(main())))
"""


def test_a_plain_python_process_calls_the_deployed_app(deployed: Deployed) -> None:
    """As in runpod-flash, a script's call runs on the deployed app by default (and with
    FLASH_CALLS=remote); FLASH_CALLS=local runs the same code in the process, calls of other
    endpoints' plain defs still awaited."""
    for mode in ("", "remote"):  # unset (empty), and remote
        done = _script(deployed, CALLER, FLASH_CALLS=mode)
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        assert out["pipeline"]["tokens"] == ["a", "b", "a"]
        assert out["tokens"] == ["X", "y"]  # a plain def, awaited: it ran remotely
        assert out["added"] >= 100
        assert out["error"] == ["fail", "remote_error", "ValueError", "no"]
        assert "deploying" not in done.stderr  # it is deployed: nothing provisioned

    local = _script(
        deployed,
        "import asyncio; from tokenizer import tokenize; from counter import Counter\n"
        "async def main(): return await tokenize('X y'), await Counter().add(2)\n"
        "print(*asyncio.run(main()))",
        FLASH_CALLS="local",
    )
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip() == "['X', 'y'] 2"


CLIENT = """
import asyncio, json, sys
from runpod_flash import Endpoint, EndpointJob

async def main():
    tokenizer, stats = Endpoint(id=sys.argv[1]), Endpoint(id=sys.argv[2])
    job = await tokenizer.run({"text": "a B", "lower": True})
    assert isinstance(job, EndpointJob) and job.id
    await job.wait(timeout=60)
    sync = await tokenizer.runsync({"text": "x y z"})
    out = {"run": [job.done, job.output], "runsync": [sync.data["status"], sync.output]}
    out["count"] = await stats.post("/count", {"tokens": ["a", "b", "a"]})
    out["echo"] = await stats.get("/echo/hi?times=2")
    cancelled = await tokenizer.cancel(job.id)  # a finished job stays finished
    out["cancel"] = cancelled.id == job.id
    try:
        await Endpoint(id="no-such-endpoint").runsync({})
    except Exception as err:
        out["missing"] = [type(err).__name__, err.cause]
    try:
        @stats.post("/new")
        def new() -> None: ...
    except TypeError as err:
        out["decorate"] = str(err)
    return out

print(json.dumps(asyncio.run(main())))
"""


def test_a_client_of_a_deployed_endpoint_by_id(deployed: Deployed) -> None:
    """runpod-flash's client mode: Endpoint(id=...).run/runsync/cancel with EndpointJob, and a
    load-balanced endpoint's routes by path."""
    ids = {ep.resource: ep.id for ep in deployed.apps["cross_chain"].endpoints}
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, ids["tokenizer"], ids["stats"]],
        env=deployed.script_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["run"] == [True, ["a", "b"]]
    assert out["runsync"] == ["COMPLETED", ["x", "y", "z"]]
    assert out["count"] == {"a": 2, "b": 1}
    assert out["echo"] == {"echo": "hi hi"}
    assert out["cancel"] is True
    assert out["missing"] == ["RemoteCallError", "not_deployed"]
    assert "is a client of a deployed endpoint" in out["decorate"]


LIVE_CALLER = """
import asyncio, json
from flash_runtime import RemoteCallError
from tokenizer import explode, tokenize

async def main():
    first = await asyncio.gather(tokenize("A b"), tokenize("c D", lower=True))
    out = {"first": first, "again": await tokenize("e")}
    try:  # another endpoint of the same project: already deployed to live by this run
        await explode("boom")
    except RemoteCallError as err:
        out["other"] = [err.endpoint, err.remote_type]
    return out

print(json.dumps(asyncio.run(main())))
"""


def test_a_script_provisions_what_is_not_deployed_in_the_live_environment(
    deployed: Deployed, tmp_path: Path
) -> None:
    """Nothing deployed for this project: the script's first calls deploy it once to the
    app's live environment (one line says so) and run there; a later run sends new code."""
    project = tmp_path / "fresh_words"
    project.mkdir()
    shutil.copy(APPS / "cross_chain" / "tokenizer.py", project)
    done = _script(deployed, LIVE_CALLER, cwd=project)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "first": [["A", "b"], ["c", "d"]],
        "again": ["e"],
        "other": ["fail", "ValueError"],
    }
    notes = [line for line in done.stderr.splitlines() if line.startswith("flash:")]
    assert len(notes) == 1, done.stderr
    assert "'tokenizer' is not deployed in fresh_words/production" in notes[0]
    assert "to fresh_words/live on the local platform" in notes[0]

    async def live_endpoints() -> list[str]:
        async with ControlPlaneClient(deployed.target) as client:
            app = await client.app_by_name("fresh_words")
            env = await client.environment_by_name(app["id"], "live")
            return sorted(ep["name"] for ep in env["endpoints"])

    assert asyncio.run(live_endpoints()) == ["live-fail", "live-tokenizer"]

    tokenizer = project / "tokenizer.py"
    tokenizer.write_text(tokenizer.read_text().replace(".split()", ".split()[::-1]"))
    again = _script(
        deployed,
        "import asyncio; from tokenizer import tokenize\nprint(asyncio.run(tokenize('1 2')))",
        cwd=project,
    )
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "['2', '1']"  # the new code, deployed by this run

    off = _script(
        deployed,
        "import asyncio; from tokenizer import tokenize; asyncio.run(tokenize('x'))",
        cwd=project,
        FLASH_ENV="nowhere",
        FLASH_LIVE_PROVISIONING="0",
    )
    assert off.returncode == 1 and "RemoteCallError" in off.stderr and "not_deployed" in off.stderr


def _fake_clock() -> tuple[list[float], RemoteClient]:
    now = [1000.0]
    return now, RemoteClient(timer=lambda: now[0])


def tokenize(text: str, lower: bool = False) -> list[str]:
    """Stands for cross_chain's ``tokenize``: the client finds it by name in the manifest."""
    raise AssertionError("runs remotely")


def count(tokens: list[str]) -> dict[str, int]:
    """Stands for cross_chain's ``count`` route."""
    raise AssertionError("runs remotely")


@pytest.fixture
def script_env(deployed: Deployed, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as a script of the cross_chain project (direct RemoteClient calls)."""
    for name in ("RUNPOD_API_KEY", "RUNPOD_API_BASE_URL", "FLASH_RESOURCE_NAME"):
        monkeypatch.delenv(name, raising=False)
    manifest = deployed.projects["cross_chain"] / ".flash/flash_manifest.json"
    for name, value in deployed.script_env(FLASH_MANIFEST_PATH=str(manifest)).items():
        if name.startswith("FLASH_"):
            monkeypatch.setenv(name, value)


@pytest.mark.usefixtures("script_env")
def test_discovery_cache_expires_after_300_s_and_concurrent_first_calls_share_a_query(
    deployed: Deployed,
) -> None:
    now, client = _fake_clock()

    def queries() -> int:
        return deployed.graphql_log().get("discoverFlashApp", 0)

    async def calls() -> list[int]:
        seen = [queries()]
        # Ten concurrent first calls: one lookup.
        results = await asyncio.gather(
            *(client.call("tokenizer", "tokenize", tokenize, (f"w{i}",), {}) for i in range(10))
        )
        assert results == [[f"w{i}"] for i in range(10)]
        seen.append(queries())
        assert await client.call("stats", "count", count, (["a", "a"],), {}) == {"a": 2}
        seen.append(queries())
        now[0] += 299  # still fresh: no lookup
        await client.call("tokenizer", "tokenize", tokenize, ("x",), {"lower": True})
        await client.call("stats", "count", count, (), {"tokens": []})
        seen.append(queries())
        now[0] += 2  # 301 s after the first lookups: both expired
        await client.call("tokenizer", "tokenize", tokenize, ("x",), {})
        await client.call("tokenizer", "tokenize", tokenize, ("y",), {})
        await client.call("stats", "count", count, ([],), {})
        seen.append(queries())
        await client.close()
        return seen

    seen = asyncio.run(calls())
    assert [b - a for a, b in itertools.pairwise(seen)] == [1, 1, 0, 2]


@pytest.mark.usefixtures("script_env")
def test_calls_keep_working_from_the_cache_while_the_control_plane_fails(
    deployed: Deployed, caplog: pytest.LogCaptureFixture
) -> None:
    now, client = _fake_clock()

    async def calls() -> None:
        assert await client.call("tokenizer", "tokenize", tokenize, ("a b",), {}) == ["a", "b"]
        deployed.graphql_log(available=False)
        try:
            failed = deployed.graphql_log().get("discoverFlashApp", 0)
            now[0] += 301  # expired: the next call asks, fails, and uses the URL it had
            with caplog.at_level(logging.WARNING, logger="flash_runtime.calls"):
                assert await client.call("tokenizer", "tokenize", tokenize, ("c",), {}) == ["c"]
            assert "discovery of 'tokenizer' failed" in caplog.text
            assert deployed.graphql_log()["discoverFlashApp"] == failed + 1
            # It does not ask again on every call while the control plane is down...
            assert await client.call("tokenizer", "tokenize", tokenize, ("d",), {}) == ["d"]
            assert deployed.graphql_log()["discoverFlashApp"] == failed + 1
            now[0] += 31  # ...only every 30 s.
            assert await client.call("tokenizer", "tokenize", tokenize, ("e",), {}) == ["e"]
            assert deployed.graphql_log()["discoverFlashApp"] == failed + 2
            # A target it never found has nothing to fall back on.
            with pytest.raises(RemoteCallError) as info:
                await client.call("stats", "count", count, ([],), {})
            assert (info.value.endpoint, info.value.cause) == ("stats", "unavailable")
            assert "HTTP 503" in str(info.value) or "switched off" in str(info.value)
        finally:
            deployed.graphql_log(available=True)
        await client.close()

    asyncio.run(calls())


# These take endpoints away: they come last.


def test_a_call_to_an_undeployed_endpoint_is_a_clear_error(deployed: Deployed) -> None:
    api = deployed.url("cross_mixed", "public-api")
    assert deployed.request("POST", f"{api}/process", {"data": {}})[0] == 200  # URL cached
    backend = next(
        ep for ep in deployed.apps["cross_mixed"].endpoints if ep.resource == "gpu-backend"
    )

    async def undeploy() -> None:
        async with ControlPlaneClient(deployed.target) as client:
            await client.delete_endpoint(backend.id)

    asyncio.run(undeploy())
    status, body = deployed.request("POST", f"{api}/process", {"data": {}})
    assert status == 500 and body["error"] == "RemoteCallError", body
    assert "call to endpoint 'gpu-backend' failed (not_deployed)" in body["message"]
    assert "has no endpoint for it" in body["message"]
