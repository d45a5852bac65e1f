"""Artifacts built for Runpod's images boot in a container of the official image contract.

``FLASH_TEST_OFFICIAL_IMAGES`` names images built from ``flash_runtime/platform/official_image/Dockerfile``
(``NAME=PYTHON``): the images' package set with the reference SDK, their entry files in
``/app``, their commands. ``scripts/test-images`` builds one on Debian trixie, so this is the
Python 3.13 official-image path (``tests/e2e/test_official_image.py`` runs 3.11 as processes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import APPS
from support import Containers, http, parametrize_images, runpod_env, wait_ping

from flash_runtime.pack import build
from flash_runtime.pack.scaffold import init_project
from flash_runtime.testing.jobserver import JobServer
from flash_runtime.testing.net import free_port


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_images(metafunc, "official", "FLASH_TEST_OFFICIAL_IMAGES")


@pytest.fixture(scope="module")
def official_artifacts(tmp_path_factory: pytest.TempPathFactory, python: str) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp(f"official-py{python}")
    template = build(init_project(tmp / "hello"), python_version=python)
    project = tmp / "official_numpy"
    shutil.copytree(APPS / "official_numpy", project)
    numpy_app = build(project, python_version=python)
    assert template.core_bytes > 0 and "numpy" in {p.name for p in numpy_app.packages}
    return {"template": template.artifact, "numpy": numpy_app.artifact}


def test_lb_on_the_official_contract(
    official: str, python: str, official_artifacts: dict[str, Path], containers: Containers
) -> None:
    for app, resource, path, body, key, expected in [
        ("template", "lb_worker", "/process", {"input_data": {"a": 1}}, "echo", {"a": 1}),
        ("numpy", "stats_api", "/mean", {"values": [1, 2]}, "mean", 1.5),
    ]:
        port = free_port()
        command = ["uvicorn", "lb_handler:app", "--host", "127.0.0.1", "--port", str(port),
                   "--timeout-keep-alive", "600"]  # fmt: skip
        name = containers.run(
            official, official_artifacts[app], runpod_env(resource, "lb"), command=command
        )
        url = f"http://127.0.0.1:{port}"
        wait_ping(containers, name, url)
        status, reply = http(f"{url}{path}", body)
        assert status == 200 and reply[key] == expected, containers.logs(name)
        if app == "numpy":
            assert "/app/.flash-worker/core.zip/runpod_flash/" in reply["sdk"]
        assert "handing the worker over to flash_runtime" in containers.logs(name)


def test_queue_on_the_official_contract(
    official: str, python: str, official_artifacts: dict[str, Path], containers: Containers
) -> None:
    with JobServer(hold=1.0) as server:
        env = {**runpod_env("stats_job", "qb"), **server.worker_env("official-c", ping_ms=1000)}
        name = containers.run(official, official_artifacts["numpy"], env)
        job = server.wait(server.submit({"values": [1, 2, 3]}), timeout=60)
        assert job.result is not None, containers.logs(name)
        assert job.result["output"]["total"] == 6.0
        assert "/app/.flash-worker/core.zip/runpod_flash/" in job.result["output"]["sdk"]
        assert not server.violations, server.violations
