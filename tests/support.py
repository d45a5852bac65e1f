"""Helpers several test modules share (test modules never import each other).

* :func:`serve_control_plane` and :class:`ControlPlaneServer`: the control plane over real HTTP,
  driving a :class:`RecordingRuntime` (the ``control_plane`` fixture in ``conftest.py``);
* :func:`schemas` and :func:`check_request`: every GraphQL document the project sends is checked
  against Runpod's API (``runpod_schema.graphql``) and our own control plane's SDL;
* :func:`request` and :func:`http`: small JSON calls over HTTP (with and without a key);
* :class:`Containers`, :func:`runpod_env`, :func:`wait_ping`: worker containers for
  ``tests/containers/``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvicorn
from graphql import GraphQLSchema, OperationDefinitionNode, build_schema, parse, validate
from graphql.execution.values import get_variable_values
from starlette.applications import Starlette

from flash_runtime.deploy.target import local_target
from flash_runtime.platform import controlplane, tls
from flash_runtime.platform.controlplane import SCHEMA_PATH
from flash_runtime.platform.db import connect
from flash_runtime.platform.model import EndpointSpec
from flash_runtime.platform.secretstore import SecretStore
from flash_runtime.protocol.controlplane import ControlPlaneClient
from flash_runtime.protocol.local import PlatformConfig
from flash_runtime.protocol.target import Target
from flash_runtime.protocol.wire import bearer
from flash_runtime.testing.net import call, free_port
from flash_runtime.testing.sdk2 import Sdk2Env, ensure_sdk2
from flash_runtime.testing.sdk2 import default_root as sdk2_root

T = TypeVar("T")


@dataclass
class RecordingRuntime:
    """Records what the control plane asks to run. Like the platform's runtime, it gives each
    load-balanced endpoint a port of its own (``first_port`` onwards); ``failing`` names
    endpoints whose apply raises."""

    base_url: str
    first_port: int = 41000
    live: dict[str, EndpointSpec] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    applied: list[EndpointSpec] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    python_versions: frozenset[str] = frozenset({"3.11", "3.12", "3.13"})
    secrets: SecretStore = field(default_factory=SecretStore.in_memory)
    pods: Any = None  # task pods: none here

    async def apply(self, spec: EndpointSpec) -> str:
        if spec.name in self.failing:
            raise RuntimeError("worker image missing")
        self.applied.append(spec)
        self.live[spec.id] = spec
        if spec.type == "lb":
            self.ports.setdefault(spec.id, self.first_port + len(self.ports))
        return self.url_of(spec.id) or ""

    async def remove(self, endpoint_id: str) -> None:
        self.removed.append(endpoint_id)
        self.live.pop(endpoint_id, None)

    def url_of(self, endpoint_id: str) -> str | None:
        spec = self.live.get(endpoint_id)
        if spec is None:
            return None
        if spec.type == "lb":
            return f"http://127.0.0.1:{self.ports[endpoint_id]}"
        return f"{self.base_url}/v2/{spec.id}"

    def failure(self, endpoint_id: str) -> dict[str, Any] | None:
        return None


@dataclass
class ControlPlaneServer:
    """The control plane served on a free loopback port, with the runtime it drives."""

    config: PlatformConfig
    runtime: RecordingRuntime
    target: Target

    def call(self, operation: Callable[..., Awaitable[T]]) -> T:
        async def run() -> T:
            async with ControlPlaneClient(self.target) as client:
                return await operation(client)

        return asyncio.run(run())


@contextmanager
def serve_asgi(app: Any, port: int | None = None, **config: Any) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on loopback (a free port unless ``port``; no
    lifespan; ``config``: more of uvicorn's settings) until the block ends; yields its URL."""
    port = port or free_port()
    options: dict[str, Any] = {"lifespan": "off", "log_level": "warning", **config}
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextmanager
def serve_control_plane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ControlPlaneServer]:
    home = tmp_path / "flash_home"
    monkeypatch.setenv("FLASH_HOME", str(home))
    monkeypatch.setenv("FLASH_PLATFORM_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    config = PlatformConfig.load()
    runtime = RecordingRuntime(config.url)
    db = connect(config.db_path)
    app = Starlette(routes=controlplane.routes(db, runtime, config))
    assert config.host == "127.0.0.1"
    try:
        with serve_asgi(app, config.port):
            yield ControlPlaneServer(config, runtime, local_target())
    finally:
        db.close()


RUNPOD_SCHEMA_PATH = Path(__file__).with_name("runpod_schema.graphql")


@cache
def schemas() -> dict[str, GraphQLSchema]:
    return {
        "runpod": build_schema(RUNPOD_SCHEMA_PATH.read_text()),
        "local": build_schema(SCHEMA_PATH.read_text()),
    }


def check_request(schema: GraphQLSchema, document: str, variables: dict[str, Any]) -> None:
    """Fails unless ``document`` validates against ``schema`` and ``variables`` coerce to its
    variable definitions (input types, their fields, nullability)."""
    ast = parse(document)
    errors = validate(schema, ast)
    assert not errors, [e.message for e in errors]
    (operation,) = [d for d in ast.definitions if isinstance(d, OperationDefinitionNode)]
    coerced = get_variable_values(schema, operation.variable_definitions or [], variables)
    # A list of errors when the variables do not fit (graphql-core 3.2 and 3.3 alike).
    assert not isinstance(coerced, list), [e.message for e in coerced]


def request(method: str, url: str, key: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """``method url`` with the key as a bearer token (see :func:`flash_runtime.testing.net.call`)."""
    return call(method, url, body, headers=bearer(key))


def http(url: str, body: Any = None, timeout: float = 10) -> tuple[int, Any]:
    """POST ``body`` to ``url`` (GET without one), no key."""
    return call("GET" if body is None else "POST", url, body, timeout=timeout)


class Containers:
    def __init__(self) -> None:
        self.names: list[str] = []

    def run(
        self, image: str, artifact: Path, env: dict[str, str], command: list[str] | None = None
    ) -> str:
        command_args = command
        name = f"flash-test-{uuid.uuid4().hex[:10]}"
        command = ["docker", "run", "-d", "--name", name, "--network", "host"]
        command += ["-v", f"{artifact}:/root/.runpod/artifact.tar.gz:ro"]
        for key, value in env.items():
            command += ["-e", f"{key}={value}"]
        subprocess.run([*command, image, *(command_args or [])], check=True, capture_output=True)
        self.names.append(name)
        return name

    def logs(self, name: str) -> str:
        out = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        return out.stdout + out.stderr

    def running(self, name: str) -> bool:
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True
        )
        return out.stdout.strip() == "true"

    def close(self) -> None:
        for name in self.names:
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def runpod_env(resource: str, kind: str) -> dict[str, str]:
    return {
        "FLASH_RESOURCE_NAME": resource,
        "FLASH_ENDPOINT_TYPE": kind,
        "RUNPOD_ENDPOINT_ID": "ep-container",
        "RUNPOD_POD_ID": f"pod-{uuid.uuid4().hex[:6]}",
    }


def wait_ping(containers: Containers, name: str, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if http(f"{url}/ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        if not containers.running(name):
            pytest.fail(f"container {name} exited:\n{containers.logs(name)}")
        time.sleep(0.1)
    pytest.fail(f"no 200 from {url}/ping:\n{containers.logs(name)}")


def parametrize_images(metafunc: pytest.Metafunc, fixture: str, variable: str) -> None:
    """Parametrize ``fixture`` (and ``python``) with the ``NAME=PYTHON`` pairs in ``variable``
    (space-separated), which ``scripts/test-images`` sets after building the images; a failure,
    never a skip, when it is unset."""
    if fixture not in metafunc.fixturenames:
        return
    raw = os.environ.get(variable, "").split()
    if not raw:
        pytest.fail(f"{variable} is not set: run scripts/test-images, which builds the images")
    pairs = [tuple(item.partition("=")[::2]) for item in raw]
    metafunc.parametrize((fixture, "python"), pairs, ids=[n for n, _ in pairs], scope="module")


def endpoint_spec(id: str, resource: str, artifact: Path, **settings: Any) -> EndpointSpec:
    """What the control plane would apply for ``resource`` of ``artifact`` (queue-based unless
    ``type="lb"``), for tests that drive the runtime directly."""
    return EndpointSpec(
        id=id,
        name=settings.pop("name", resource),
        resource_name=resource,
        type=settings.pop("type", "qb"),
        app_id="app1",
        environment_id="env1",
        build_id=settings.pop("build_id", "build1"),
        artifact_path=artifact,
        **settings,
    )


FLASH = [sys.executable, "-c", "from flash_runtime.cli import main; main()"]


# Passed on to every CLI a test runs (FLASH_CACHE_DIR: the session's packer caches, shared by
# the tests' homes so each dependency set and the vendored core are installed and compiled once).
PLATFORM_KNOBS = (
    "FLASH_PLATFORM_WORKER_ENV",
    "FLASH_PLATFORM_IMAGE_ENVS",
    "FLASH_PLATFORM_GPUS",
    "FLASH_CACHE_DIR",
    "FLASH_PLATFORM_TLS",
)


class FlashCLI:
    """Our ``flash`` in subprocesses against a platform of its own (a temporary FLASH_HOME and
    a free loopback port), run in ``project`` unless told otherwise; :meth:`stop` stops that
    platform."""

    def __init__(self, home: Path, project: Path, **env: str) -> None:
        self.home = home
        self.project = project
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
        # How the suite's platforms run workers (conftest.py), unless a test says otherwise.
        for key in PLATFORM_KNOBS:
            if key in os.environ:
                self.env[key] = os.environ[key]
        self.env.update(
            FLASH_HOME=str(home),
            FLASH_PLATFORM_URL=self.url,
            FLASH_CREDENTIALS_FILE=str(home / "runpod_config.toml"),  # never the user's key
            **env,
        )

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """``flash args`` as it ended, whatever its exit code."""
        return subprocess.run(
            [*FLASH, *args],
            cwd=cwd or self.project,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def __call__(self, *args: str, cwd: Path | None = None, timeout: float = 180) -> str:
        """``flash args``' output; it must succeed."""
        done = self.run(*args, cwd=cwd, timeout=timeout)
        assert done.returncode == 0, f"flash {' '.join(args)}:\n{done.stderr}"
        return done.stdout

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self("platform", "status", "--json"))
        return result

    def stop(self) -> None:
        self.run("platform", "stop", timeout=60)


# -- the Runpod SDK 2.0 tests' stage (tests/e2e/test_sdk2_apps.py) -------------------------------

SDK2_APPS = Path(__file__).parent / "apps"


@dataclass
class Sdk2Platform:
    """A platform of its own (with its TLS front) and the 2.0 client's environment for it."""

    cli: FlashCLI
    sdk: Sdk2Env
    url: str
    key: str
    home: Path
    env: dict[str, str]  # the 2.0 client's

    def rp(self, *args: str, cwd: Path, stdin: str | None = None) -> str:
        done = subprocess.run(
            [self.sdk.rp, *args],
            cwd=cwd,
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"rp {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def client(self, project: Path, source: str) -> Any:
        """Run ``source`` with the 2.0 SDK in ``project`` (its app importable as ``main``); the
        script prints one JSON line, returned decoded."""
        done = subprocess.run(
            [self.sdk.python, "-c", source],
            cwd=project,
            env={**self.env, "PYTHONPATH": str(project)},
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        assert done.returncode == 0, f"client:\n{done.stdout}\n{done.stderr}"
        return json.loads(done.stdout.strip().splitlines()[-1])

    def graphql(self, query: str) -> dict[str, Any]:
        status, body = call(
            "POST", f"{self.url}/graphql", body={"query": query}, headers=bearer(self.key)
        )
        assert status == 200, body
        result: dict[str, Any] = body
        return result


@dataclass
class Sdk2Deployed:
    shop: Path  # tests/apps/sdk2_app, deployed
    shop_output: str  # what `rp flash deploy` printed
    ledger: Path  # tests/apps/sdk2_volume, deployed


def sdk2_project(name: str, dest: Path) -> Path:
    project = dest / name
    shutil.copytree(SDK2_APPS / name, project)
    return project


def _stage_sdk2(base: Path) -> tuple[Sdk2Platform, Sdk2Deployed]:
    """Start a platform and deploy both fixture 2.0 apps with `rp flash deploy`, side by side;
    the shop's secret first, which its deploy checks. Runs before any fixture has set the
    suite's environment, so the platform's knobs are given here."""
    sdk = ensure_sdk2(sdk2_root(Path(__file__).resolve().parent.parent / "build"))
    home = base / "flash_home"
    tls_port = free_port()
    cli = FlashCLI(
        home,
        base,
        FLASH_PLATFORM_TLS="1",
        FLASH_PLATFORM_TLS_PORT=str(tls_port),
        FLASH_PLATFORM_WORKER_ENV="platform",
        FLASH_PLATFORM_IMAGE_ENVS=str(
            Path(__file__).resolve().parent.parent / "build" / "image-envs"
        ),
        FLASH_PLATFORM_GPUS="none",
    )
    cli("platform", "start")
    key = cli.status()["api_key"]
    user_home = base / "home"  # the 2.0 CLI keeps its own state under HOME
    user_home.mkdir()
    settings = tls.client_environment(PlatformConfig(home, cli.url, key))
    # Its TLS front is on the port chosen here, not the default one after the platform's.
    settings["RUNPOD_ENDPOINT_BASE_URL"] = f"https://flash.localhost:{tls_port}/v2"
    env = sdk.env({**os.environ, "HOME": str(user_home)}, settings)
    platform = Sdk2Platform(cli, sdk, cli.url, key, home, env)
    projects = base / "projects"
    shop, ledger = sdk2_project("sdk2_app", projects), sdk2_project("sdk2_volume", projects)
    platform.rp("secret", "add", "shop-token", cwd=shop, stdin="tok-123\n")
    runs = {
        project: subprocess.Popen(
            [sdk.rp, "flash", "deploy"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for project in (shop, ledger)
    }
    outputs = {}
    for project, run in runs.items():
        out, err = run.communicate(timeout=600)
        assert run.returncode == 0, f"rp flash deploy in {project.name}:\n{out}\n{err}"
        outputs[project] = out
    return platform, Sdk2Deployed(shop, outputs[shop], ledger)


class Sdk2Stage:
    """:func:`_stage_sdk2` once for the 2.0 tests' module, in a thread that :meth:`start` begins
    and :meth:`result` waits for. (Started at the end of collection instead, its minute of
    builds overlapped the tests before it but slowed them by as much: the machine has 2 cores.)"""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._base: Path | None = None
        self._made: tuple[Sdk2Platform, Sdk2Deployed] | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._base = Path(tempfile.mkdtemp(prefix="flash-sdk2-"))

        def run() -> None:
            assert self._base is not None
            try:
                self._made = _stage_sdk2(self._base)
            except BaseException as err:  # re-raised in the test that waits
                self._error = err

        self._thread = threading.Thread(target=run, name="sdk2-stage", daemon=True)
        self._thread.start()

    def result(self, timeout: float = 900) -> tuple[Sdk2Platform, Sdk2Deployed]:
        self.start()
        assert self._thread is not None
        self._thread.join(timeout)
        if self._error is not None:
            raise self._error
        assert self._made is not None, "the 2.0 apps' deploys did not finish in time"
        return self._made

    def stop(self) -> None:
        if self._made is not None:
            self._made[0].cli.stop()
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)


SDK2_STAGE = Sdk2Stage()
