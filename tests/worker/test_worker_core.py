"""A worker imports only the worker core: never the packer, deployer, platform, dev server or
CLI, nor the libraries that come with the CLI install (click, rich, graphql-core, ...).

Each case boots a real artifact through the real bootstrap, serves one request or job, stops
gracefully, and reports every module the process had loaded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import build_app

from flash_runtime.testing.jobserver import JobServer
from flash_runtime.testing.net import free_port

FORBIDDEN_PACKAGES = ("pack", "deploy", "platform", "devserver", "cli", "_terminal", "_entry")
FORBIDDEN_LIBRARIES = (
    "click", "rich", "graphql", "pathspec", "uv", "watchfiles", "packaging", "runpod",
)  # fmt: skip

RECORDER = (
    "import atexit, runpy, sys\n"
    "_out = sys.argv[1]\n"
    "def _dump():\n"
    "    with open(_out, 'w') as fh:\n"
    "        fh.write('\\n'.join(sorted(sys.modules)))\n"
    "atexit.register(_dump)\n"
    "sys.argv = ['flash_runtime.bootstrap']\n"
    "runpy.run_module('flash_runtime.bootstrap', run_name='__main__', alter_sys=True)\n"
)


def boot(artifact: Path, tmp: Path, resource: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    base.update(
        FLASH_BUILD_ARTIFACT_PATH=str(artifact),
        FLASH_APP_DIR=str(tmp / "app"),
        FLASH_RESOURCE_NAME=resource,
        FLASH_HOME=os.environ["FLASH_HOME"],
        **env,
    )
    log = open(tmp / "worker.log", "wb")  # noqa: SIM115 - the child holds it
    proc = subprocess.Popen(
        [sys.executable, "-c", RECORDER, str(tmp / "modules.txt")],
        env=base,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def loaded_after_stop(proc: subprocess.Popen[bytes], tmp: Path) -> set[str]:
    proc.send_signal(signal.SIGTERM)
    proc.wait(20)
    listing = tmp / "modules.txt"
    assert listing.is_file(), (tmp / "worker.log").read_text()
    return set(listing.read_text().split())


def assert_lean(modules: set[str]) -> None:
    ours = sorted(
        m for m in modules if m.split(".")[0] == "flash_runtime" and len(m.split(".")) > 1
        and m.split(".")[1] in FORBIDDEN_PACKAGES
    )  # fmt: skip
    libraries = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN_LIBRARIES)
    assert not ours and not libraries, f"a worker imported {ours + libraries}"


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


@pytest.mark.parametrize(
    ("app", "resource", "remote"),
    [("lb_echo", None, False), ("cross_mixed", "public-api", True)],
)
def test_lb_worker_imports_only_the_core(
    tmp_path: Path, app: str, resource: str | None, remote: bool
) -> None:
    artifact = build_app(app, tmp_path)
    if resource is None:
        from flash_runtime import manifest

        resource = next(iter(manifest.load(artifact.parent / "flash_manifest.json").resources))
    port = free_port()
    env = {"PORT": str(port), "FLASH_HOST": "127.0.0.1", "FLASH_ENDPOINT_TYPE": "lb"}
    if remote:
        env.update(RUNPOD_API_KEY="test-key", FLASH_APP="a", FLASH_ENV="dev")
    proc = boot(artifact, tmp_path, resource, env)
    deadline = time.monotonic() + 30
    while True:
        try:
            if get(f"http://127.0.0.1:{port}/ping") == 200:
                break
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, (
            tmp_path / "worker.log"
        ).read_text()
        time.sleep(0.05)
    if remote:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert json.loads(response.read())["client_loaded"] is True
    modules = loaded_after_stop(proc, tmp_path)
    assert ("flash_runtime.calls.client" in modules) is remote
    assert_lean(modules)


@pytest.mark.parametrize(("app", "remote"), [("qb_async", False), ("cross_chain", True)])
def test_queue_worker_imports_only_the_core(tmp_path: Path, app: str, remote: bool) -> None:
    artifact = build_app(app, tmp_path)
    from flash_runtime import manifest

    m = manifest.load(artifact.parent / "flash_manifest.json")
    resource = next(
        name for name, res in m.resources.items()
        if not res.is_load_balanced and res.makes_remote_calls is remote
    )  # fmt: skip
    with JobServer(hold=0.5) as server:
        env = server.worker_env("core-1", ping_ms=1000)
        if remote:
            env.update(RUNPOD_API_KEY="test-key", FLASH_APP="a", FLASH_ENV="dev")
        proc = boot(artifact, tmp_path, resource, env)
        if not remote:
            job = server.wait(server.submit({"name": "ada"}), timeout=30)
            assert job.result is not None, (tmp_path / "worker.log").read_text()
        else:
            server.wait_until(lambda: server.recorded("job-take"), what="a job-take")
        modules = loaded_after_stop(proc, tmp_path)
    assert ("flash_runtime.calls.client" in modules) is remote
    assert_lean(modules)
