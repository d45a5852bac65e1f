"""Runpod SDK 2.0 apps (``runpod.App``) on our runtime and our local platform, driven by the real
2.0 client (``rp`` and the SDK's handles, in a virtual environment of their own: ``build/``).

``rp flash deploy`` builds its own artifact (source, ``env/`` of vendored wheels, offline from a
wheelhouse, and ``runpod_manifest.json``), creates the app, environment, build and endpoints
through the platform's GraphQL and REST, and the SDK calls them: queue functions through the
sentinel (``/v2/flash/...`` with X-Flash-* headers), api resources at
``https://flash.flash.localhost:<tls port>`` (the platform's TLS front, trusted through
``SSL_CERT_FILE``). Workers are our bootstrap, in the platform's environment.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import runpod
from support import FLASH, SDK2_STAGE, Sdk2Deployed, Sdk2Platform, sdk2_project

from flash_runtime.protocol.wire import bearer
from flash_runtime.testing.net import call

REPO = Path(__file__).resolve().parents[2]
APPS = REPO / "tests" / "apps"


@pytest.fixture(scope="module")
def staged() -> Iterator[tuple[Sdk2Platform, Sdk2Deployed]]:
    """The platform and both apps, deployed by `rp flash deploy` side by side
    (``support.SDK2_STAGE``); the platform stops after the module."""
    platform, deployed = SDK2_STAGE.result()
    try:
        yield platform, deployed
    finally:
        SDK2_STAGE.stop()


@pytest.fixture(scope="module")
def platform(staged: tuple[Sdk2Platform, Sdk2Deployed]) -> Sdk2Platform:
    return staged[0]


@pytest.fixture(scope="module")
def deployed(staged: tuple[Sdk2Platform, Sdk2Deployed]) -> Sdk2Deployed:
    return staged[1]


SHOP_CLIENT = """
import asyncio, json
import main

async def calls():
    out = {}
    out["remote"] = await main.greet.remote.aio("ada")
    out["remote_sync"] = main.greet.remote("bob", punct="?")
    job = await main.greet.spawn.aio("cy")
    out["spawned"] = await job.result.aio()
    out["status"] = await job.status.aio()
    out["stream"] = [chunk async for chunk in main.count.stream.aio(3)]
    out["aggregate"] = await main.count.remote.aio(2)
    out["add"] = await main.Calc.post.aio("/add", {"x": 5})
    out["base"] = await main.Calc.get.aio("/base")
    out["site"] = await main.site.get.aio("/hello")
    # runpod.Queue / runpod.Api: the same resources by name, without importing the app
    queue = runpod.Queue(app="sdk2-shop", name="greet")
    out["stub"] = await queue.remote.aio(name="dee")
    api = runpod.Api(app="sdk2-shop", name="calc")
    out["stub_api"] = await api.post.aio("/add", {"x": 1})
    # a task: a pod per call, started and terminated by the SDK
    out["task"] = await main.crunch.remote.aio([1, 2, 3])
    return out

import runpod
print(json.dumps(asyncio.run(calls())))
"""


@pytest.mark.timeout(600)
def test_a_2_0_app_deploys_from_the_real_client_and_every_handle_calls_it(
    platform: Sdk2Platform, deployed: Sdk2Deployed
) -> None:
    p = platform
    project = deployed.shop

    # The secret (`rp secret add`, in the fixture): listed without its value, in no API answer.
    assert "shop-token" in p.rp("secret", "list", cwd=project)
    listed = p.graphql("{ myself { secrets { id name description createdAt } } }")
    assert [s["name"] for s in listed["data"]["myself"]["secrets"]] == ["shop-token"]
    assert "tok-123" not in json.dumps(listed)

    assert "sdk2-shop/default is live" in deployed.shop_output

    # What the platform holds: the app, its environment, the build of the 2.0 manifest, one
    # endpoint per queue and api resource (the task has none), on the 2.0 runtime images.
    apps = p.graphql(
        "{ myself { flashApps { name flashEnvironments { name activeBuildId"
        " endpoints { id name type template { imageName env { key value } } } } } } }"
    )["data"]["myself"]["flashApps"]
    (app,) = [a for a in apps if a["name"] == "sdk2-shop"]
    (env,) = app["flashEnvironments"]
    assert env["name"] == "default" and env["activeBuildId"]
    endpoints = {e["name"]: e for e in env["endpoints"]}
    assert set(endpoints) == {"greet", "count", "calc", "site"}
    assert endpoints["calc"]["type"] == "LB" and endpoints["greet"]["type"] == "QB"
    assert endpoints["greet"]["template"]["imageName"] == f"runpod/queue:py{_py()}-latest"
    template_env = {kv["key"]: kv["value"] for kv in endpoints["greet"]["template"]["env"]}
    assert template_env["TOKEN"] == "{{ RUNPOD_SECRET_shop-token }}"  # the reference, not the value

    got = p.client(project, SHOP_CLIENT)
    assert got["remote"] == {"text": "hello ada!", "warm": True, "token": "tok-123", "slots": "2"}
    assert got["remote_sync"]["text"] == "hello bob?"
    assert got["spawned"]["text"] == "hello cy!" and got["status"] == "COMPLETED"
    assert got["stream"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert got["aggregate"] == [{"i": 0}, {"i": 1}]
    assert got["add"] == {"sum": 105} and got["base"] == {"base": 100}
    assert got["site"] == {"hello": "world", "started": "yes"}
    assert got["stub"]["text"] == "hello dee!" and got["stub_api"] == {"sum": 101}
    assert got["task"] == 6
    assert len(list((p.home / "platform" / "logs" / "pods").glob("tp*.log"))) == 1  # its runner's

    # The official runpod client (1.x) reaches the same queue endpoint by its id.
    runpod.endpoint_url_base = f"{p.url}/v2"
    greet = runpod.Endpoint(endpoints["greet"]["id"], api_key=p.key)
    assert greet.run_sync({"name": "eve"}, timeout=60)["text"] == "hello eve!"
    # Bad input is a clear error, and the worker goes on.
    status, failed = call(
        "POST",
        f"{p.url}/v2/{endpoints['greet']['id']}/runsync",
        {"input": {"nom": "x"}},
        headers=bearer(p.key),
    )
    assert status == 200 and failed["status"] == "FAILED" and "name" in failed["error"]
    assert greet.run_sync({"name": "fay"}, timeout=60)["text"] == "hello fay!"
    # A route body that is not JSON is a 400 (the 2.0 runtime would call the method without it).
    calc = endpoints["calc"]["id"]
    bad = urllib.request.Request(
        f"{p.url}/add",
        data=b"{nope",
        method="POST",
        headers={**bearer(p.key), "Host": f"{calc}.localhost", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(bad, timeout=30)
    assert refused.value.code == 400
    assert json.loads(refused.value.read())["error"] == "MalformedBody"

    p.rp("secret", "delete", "shop-token", cwd=project, stdin="y\n")
    assert p.graphql("{ myself { secrets { name } } }")["data"]["myself"]["secrets"] == []


LEDGER_CLIENT = """
import asyncio, json
import main

async def calls():
    job = await main.ledger.spawn.aio("a", fail_once=True)
    try:
        await job.result.aio()
        first = "COMPLETED"
    except Exception as err:
        first = type(err).__name__
    failed = await job.status.aio()
    retried = await job.retry.aio()
    again = await retried.result.aio()
    second = await main.ledger.remote.aio("b")
    return {"first": first, "failed": failed, "again": again, "second": second}

print(json.dumps(asyncio.run(calls())))
"""


ROLLED_CLIENT = """
import json, time, main
deadline = time.monotonic() + 90
while True:
    got = main.ledger.remote("c")
    if got["release"] == "v2" or time.monotonic() > deadline:
        break
    time.sleep(0.5)
print(json.dumps(got))
"""


@pytest.mark.timeout(600)
def test_a_2_0_app_mounts_its_volume_retries_a_failed_job_and_rolls_on_redeploy(
    platform: Sdk2Platform, deployed: Sdk2Deployed
) -> None:
    p = platform
    project = deployed.ledger

    got = p.client(project, LEDGER_CLIENT)
    assert got["first"] == "RemoteExecutionError" and got["failed"] == "FAILED"
    assert got["again"] == {"lines": ["a"], "release": "v1"}  # the same job, run again
    assert got["second"] == {"lines": ["a", "b"], "release": "v1"}
    # The volume: the 2.0 deploy made it through REST (name, size, data centre) ...
    status, volumes = call("GET", f"{p.url}/v2/network-volumes", headers=bearer(p.key))
    assert status == 200
    (volume,) = volumes["networkVolumes"]
    assert volume["name"] == "sdk2-data" and volume["dataCenter"] == "EU-RO-1"
    # ... and its data is the host directory of (app, environment, volume).
    book = p.home / "platform" / "volumes" / "sdk2-ledger" / "default" / "sdk2-data" / "ledger.txt"
    assert book.read_text().splitlines() == ["a", "b"]

    # A redeploy: the same endpoint, its own template replaced (a new RUNPOD_BUILD_ID), the
    # workers rolled onto the new build; the volume's data stays.
    main = project / "main.py"
    main.write_text(main.read_text().replace('RELEASE = "v1"', 'RELEASE = "v2"'))
    p.rp("flash", "deploy", cwd=project)
    # As on Runpod, the deploy does not wait for the roll: an old worker may answer a call made
    # at once; within the roll, the new build does.
    again = p.client(project, ROLLED_CLIENT)
    assert again["release"] == "v2" and again["lines"][:2] == ["a", "b"]


def _py() -> str:
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}"


@pytest.mark.timeout(600)
def test_flash_dev_runs_a_2_0_projects_entrypoint_against_live_endpoints(
    platform: Sdk2Platform, tmp_path: Path
) -> None:
    p = platform
    project = sdk2_project("sdk2_volume", tmp_path)
    # What a user evals to point the SDK at the platform: what these tests give it.
    exported = dict(
        line.removeprefix("export ").split("=", 1)
        for line in p.cli("platform", "env").split("\n")
        if line
    )
    for key in (
        "RUNPOD_API_KEY",
        "RUNPOD_API_BASE_URL",
        "RUNPOD_ENDPOINT_BASE_URL",
        "SSL_CERT_FILE",
    ):
        assert exported[key] == p.env[key]
    env = {
        **p.cli.env,
        "FLASH_SDK2_PYTHON": p.sdk.python,
        **{k: v for k, v in p.env.items() if k.startswith("PIP_")},
    }
    done = subprocess.run(
        [*FLASH, "dev", "main.py", "--once"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "ENTRYPOINT {'lines': ['dev'], 'release': 'v1'}" in done.stdout
    assert "deleted sdk2-ledger/live" in done.stderr
    apps = p.graphql("{ myself { flashApps { name flashEnvironments { name } } } }")
    (ledger,) = [a for a in apps["data"]["myself"]["flashApps"] if a["name"] == "sdk2-ledger"]
    assert "live" not in [e["name"] for e in ledger["flashEnvironments"]]
    # Without a Python that has the 2.0 SDK, it says how to get one.
    refused = subprocess.run(
        [*FLASH, "dev", "main.py", "--once"],
        cwd=project,
        env={**p.cli.env, "FLASH_SDK2_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode != 0 and "FLASH_SDK2_PYTHON" in refused.stderr
