"""The local platform's ``docker`` backend: every worker a container of its endpoint's image.

``flash platform start --workers docker`` and ``flash deploy --image-repository``: an image the
machine does not have is refused with the command that builds it; then a load-balanced and a
queue endpoint run as containers of our CPU image (built by ``scripts/test-images``, tagged
under the repository the artifact names), a system package is installed at the first start, the
volume is mounted at ``/runpod-volume``, a package the image lacks fails with the hint, a killed
container is replaced and its job finished by the replacement, and stopping the platform leaves
no container behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS
from support import FLASH, FlashCLI, request

from flash_runtime.testing.net import wait_until

REPOSITORY = "flashtest"


@pytest.fixture
def image() -> str:
    name = os.environ.get("FLASH_TEST_BACKEND_IMAGE", "")
    if not name:
        pytest.fail("FLASH_TEST_BACKEND_IMAGE is not set: run scripts/test-images")
    return name


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[FlashCLI]:
    platform = FlashCLI(tmp_path / "flash_home", tmp_path, FLASH_PLATFORM_DRAIN_GRACE_S="10")
    try:
        yield platform
    finally:
        platform.stop()


def containers() -> list[str]:
    """Worker containers of any platform (they carry its label)."""
    listed = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=flash.platform"], capture_output=True, text=True
    )
    return listed.stdout.split()


def untag(*tags: str) -> None:
    subprocess.run(["docker", "rmi", *tags], capture_output=True)


def test_endpoints_run_as_containers_of_their_image(
    cli: FlashCLI, tmp_path: Path, image: str
) -> None:
    project = tmp_path / "world"
    shutil.copytree(APPS / "docker_world", project)
    python = image.rpartition(":py")[2]
    tags = [f"{REPOSITORY}/{name}:py{python}-latest" for name in ("flash-cpu", "flash-lb-cpu")]
    untag(*tags)
    # The apt install happens at the first start: none from an earlier run may be reused.
    made = subprocess.run(
        ["docker", "images", "-q", "flash-sysdeps"], capture_output=True, text=True
    )
    if made.stdout.split():
        subprocess.run(["docker", "rmi", "-f", *set(made.stdout.split())], capture_output=True)
    cli("platform", "start", "--workers", "docker")
    deploy = ["deploy", "--json", "--image-repository", REPOSITORY]

    refused = cli.run(*deploy, cwd=project)
    assert refused.returncode != 0
    assert f"{tags[0]} of endpoint" in refused.stderr and "docker build -f Dockerfile.cpu" in (
        refused.stderr
    ), refused.stderr

    for tag in tags:
        subprocess.run(["docker", "tag", image, tag], check=True)
    try:
        started = time.perf_counter()
        result = json.loads(cli(*deploy, cwd=project, timeout=900))
        print(f"\ndeploy with containers (jq installed once): {time.perf_counter() - started:.1f}s")
        _check_endpoints(cli, result)
    finally:
        cli.stop()
        wait_until(lambda: not containers(), timeout=60, what="no worker container left")
        untag(*tags)


def _check_endpoints(cli: FlashCLI, result: dict[str, Any]) -> None:
    endpoints = {ep["resource"]: ep for ep in result["endpoints"]}
    notices = " | ".join(endpoints["tools"]["notices"])
    assert "installed system_dependencies jq" in notices, endpoints["tools"]
    key = str(cli.status()["api_key"])

    status, mean = request("POST", f"{endpoints['api']['url']}/mean", key, {"values": [1, 2, 6]})
    assert status == 200 and mean["mean"] == 3.0, mean

    def run_sync(name: str, payload: dict[str, Any]) -> dict[str, Any]:
        url = f"{cli.url}/v2/{endpoints[name]['id']}/runsync"
        code, job = request("POST", url, key, {"input": payload})
        assert code == 200, job
        return dict(job)

    tools = run_sync("tools", {"text": "hi", "write": "from a container"})
    assert tools["status"] == "COMPLETED", tools
    assert tools["output"]["jq"] == "hi" and tools["output"]["volume"] == "/runpod-volume"
    assert tools["output"]["note"] == "from a container"

    undeclared = run_sync("undeclared", {})
    assert undeclared["status"] == "FAILED"
    assert "No module named 'graphql'" in undeclared["error"]
    assert "dependencies" in undeclared["error"]

    # A worker's container killed mid-job: the job is queued again and finished by the
    # container that replaces it.
    tools_id = endpoints["tools"]["id"]

    def tools_workers() -> list[dict[str, Any]]:
        eps = cli.status()["endpoints"]
        return list(next(e for e in eps if e["id"] == tools_id)["workers"])

    [before] = tools_workers()
    code, job = request("POST", f"{cli.url}/v2/{tools_id}/run", key, {"input": {"text": "slow"}})
    assert code == 200, job

    def job_status() -> str:
        return str(request("GET", f"{cli.url}/v2/{tools_id}/status/{job['id']}", key)[1]["status"])

    wait_until(lambda: job_status() == "IN_PROGRESS", timeout=30, what="the slow job running")
    subprocess.run(["docker", "kill", before["container"]], check=True, capture_output=True)
    wait_until(lambda: job_status() == "COMPLETED", timeout=120, what="the job finished again")
    after = [w for w in tools_workers() if w["state"] == "ready"]
    assert after and after[0]["container"] != before["container"], (before, after)
    done = request("GET", f"{cli.url}/v2/{tools_id}/status/{job['id']}", key)[1]
    assert done["output"]["hostname"] == after[0]["id"] and done["output"]["note"] == (
        "from a container"
    ), done


def test_preview_runs_the_deployment_in_containers_until_ctrl_c(tmp_path: Path, image: str) -> None:
    project = tmp_path / "world"
    shutil.copytree(APPS / "docker_world", project)
    python = image.rpartition(":py")[2]
    tags = [f"{REPOSITORY}/{name}:py{python}-latest" for name in ("flash-cpu", "flash-lb-cpu")]
    for tag in tags:
        subprocess.run(["docker", "tag", image, tag], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    env["FLASH_HOME"] = str(tmp_path / "my_home")  # its build cache serves; no platform there
    preview = subprocess.Popen(
        [*FLASH, "deploy", "--preview", "--json", "--image-repository", REPOSITORY],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert preview.stdout is not None
        line = preview.stdout.readline()
        assert line, "the preview printed no deployment"
        result = json.loads(line)
        endpoints = {ep["resource"]: ep for ep in result["endpoints"]}
        key, home = result["preview"]["apiKey"], Path(result["preview"]["home"])
        assert len(containers()) >= 3  # one per endpoint, at least
        url = endpoints["api"]["url"]
        status, mean = request("POST", f"{url}/mean", key, {"values": [4, 6]})
        assert status == 200 and mean["mean"] == 5.0, mean
    finally:
        preview.send_signal(signal.SIGINT)
        _, stderr = preview.communicate(timeout=120)
        untag(*tags)
    assert preview.returncode == 0, stderr
    assert "Stopping the preview" in stderr
    wait_until(lambda: not containers(), timeout=60, what="the preview's containers removed")
    assert not home.exists() and not (tmp_path / "my_home" / "platform").exists()


def test_a_gpu_worker_container_gets_its_devices_and_the_volume(tmp_path: Path) -> None:
    """What ``docker run`` is given for a GPU endpoint with a volume (no GPU here to run it):
    its GPUs by index, the volume at /runpod-volume, variables by name only."""
    from support import endpoint_spec

    from flash_runtime.platform.docker import DockerBackend
    from flash_runtime.platform.gpus import Gpu
    from flash_runtime.platform.settings import RuntimeSettings
    from flash_runtime.protocol.local import PlatformConfig

    config = PlatformConfig(home=tmp_path, url="http://127.0.0.1:1", api_key="fl_test")
    backend = DockerBackend(config, RuntimeSettings(workers="docker"))
    artifact = tmp_path / "artifact.tar.gz"
    artifact.write_bytes(b"")
    spec = endpoint_spec(
        "gpuvol00000001", "r", artifact, gpu_count=2, volume_dir=str(tmp_path / "vol"),
        image="me/flash:py3.11-latest",
    )  # fmt: skip
    env = {"RUNPOD_AI_API_KEY": "secret-value"}
    launch = backend.launch(spec, "w1", env, [Gpu(0, "NVIDIA H200"), Gpu(2, "NVIDIA H200")])
    args = launch.command
    assert args[args.index("--gpus") + 1] == '"device=0,2"'
    assert f"{tmp_path / 'vol'}:/runpod-volume" in args
    assert launch.env["RUNPOD_VOLUME_PATH"] == "/runpod-volume"
    assert "secret-value" not in " ".join(args) and "RUNPOD_AI_API_KEY" in args
    assert launch.env["RUNPOD_AI_API_KEY"] == "secret-value"  # given to the client, by name
    assert args[-1] == "me/flash:py3.11-latest"
