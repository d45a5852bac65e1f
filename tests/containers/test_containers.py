"""Our worker images, built for real (``scripts/test-images``), run real artifacts.

Each image named in ``FLASH_TEST_IMAGES`` (``NAME=PYTHON`` pairs, space-separated) gets an LB
and a queue worker container from artifacts built for our images, started the way Runpod starts
a worker: the image's own command, the artifact mounted at ``/root/.runpod/artifact.tar.gz``,
the environment a Runpod worker gets, host networking (all traffic on loopback).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS
from support import Containers, http, parametrize_images, runpod_env, wait_ping

from flash_runtime.pack import build
from flash_runtime.pack.scaffold import init_project
from flash_runtime.testing.jobserver import JobServer
from flash_runtime.testing.net import free_port
from flash_runtime.testing.sdk2 import (
    artifacts_cache,
    build_artifact,
    default_root,
    ensure_sdk2,
)

REPO = Path(__file__).resolve().parents[2]

REPOSITORY = "registry.example/flash"  # any: the packer only needs to know it is our images


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_images(metafunc, "image", "FLASH_TEST_IMAGES")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, python: str) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp(f"py{python}")
    template = build(
        init_project(tmp / "hello"), python_version=python, image_repository=REPOSITORY
    )
    numpy_project = tmp / "official_numpy"
    shutil.copytree(APPS / "official_numpy", numpy_project)
    numpy_app = build(numpy_project, python_version=python, image_repository=REPOSITORY)
    assert numpy_app.core_bytes == 0 and template.core_bytes == 0
    assert "numpy" in numpy_app.left_out  # our CPU image has numpy
    return {"template": template.artifact, "numpy": numpy_app.artifact}


def test_lb_containers_serve_the_template_and_numpy(
    image: str, python: str, artifacts: dict[str, Path], containers: Containers
) -> None:
    cases: list[tuple[str, str, str, dict[str, Any], str, Any]] = [
        ("template", "lb_worker", "/process", {"input_data": {"a": 1}}, "echo", {"a": 1}),
        ("numpy", "stats_api", "/mean", {"values": [2, 4]}, "mean", 3.0),
    ]
    for app, resource, path, body, key, expected in cases:
        port = free_port()
        env = {**runpod_env(resource, "lb"), "PORT": str(port), "FLASH_HOST": "127.0.0.1"}
        name = containers.run(image, artifacts[app], env)
        url = f"http://127.0.0.1:{port}"
        wait_ping(containers, name, url)
        status, reply = http(f"{url}{path}", body)
        assert status == 200 and reply[key] == expected, (reply, containers.logs(name))


def test_queue_container_takes_jobs_over_the_runpod_protocol(
    image: str, python: str, artifacts: dict[str, Path], containers: Containers
) -> None:
    with JobServer(hold=1.0) as server:
        env = {**runpod_env("cpu_worker", "qb"), **server.worker_env("container-1", ping_ms=1000)}
        name = containers.run(image, artifacts["template"], env)
        job = server.wait(server.submit({"input_data": {"text": "x y"}}), timeout=60)
        assert job.result is not None, containers.logs(name)
        assert job.result["output"]["words"] == 2
        assert job.result["output"]["python"].startswith(python)
        subprocess.run(["docker", "stop", "-t", "20", name], capture_output=True)
        assert not server.violations, server.violations


@pytest.fixture(scope="module")
def sdk2_image() -> tuple[str, str]:
    """One of our images (the docker backend's, ``FLASH_TEST_BACKEND_IMAGE``) and its Python:
    enough to show that the image that boots 1.x artifacts boots 2.0 ones too."""
    name = os.environ.get("FLASH_TEST_BACKEND_IMAGE", "")
    if not name:
        pytest.fail("FLASH_TEST_BACKEND_IMAGE is not set: run scripts/test-images")
    return name, name.rpartition(":py")[2]


@pytest.fixture(scope="module")
def sdk2_artifact(sdk2_image: tuple[str, str]) -> Path:
    """``tests/apps/sdk2_queue`` as the Runpod SDK 2.0 builds it (``rp flash deploy
    --build-only``) for the image's Python, offline (made beside lint by ``scripts/test``)."""
    build_dir = REPO / "build"
    sdk = ensure_sdk2(default_root(build_dir))
    return build_artifact(APPS / "sdk2_queue", sdk2_image[1], artifacts_cache(build_dir), sdk)


def test_the_same_image_boots_a_runpod_sdk_2_artifact(
    sdk2_image: tuple[str, str], sdk2_artifact: Path, containers: Containers
) -> None:
    image, python = sdk2_image
    with JobServer(hold=1.0) as server:
        env = {**runpod_env("hello", "qb"), **server.worker_env("container-2", ping_ms=1000)}
        name = containers.run(image, sdk2_artifact, env)
        job = server.wait(server.submit({"name": "two"}), timeout=60)
        assert job.result is not None, containers.logs(name)
        assert job.result["output"]["hello"] == "two"
        assert job.result["output"]["python"].startswith(python)
        subprocess.run(["docker", "stop", "-t", "20", name], capture_output=True)
        assert not server.violations, server.violations
