"""Artifacts boot on Runpod's official Flash images unchanged (item 1 of the image work).

Each test builds a real artifact for the default image target, starts it exactly as the
published ``runpod/flash*`` images start a worker (``flash_runtime/platform/official_image/``: their entry
files, their package set with the reference SDK preinstalled, ``python handler.py`` or
``uvicorn lb_handler:app``), and calls it: load-balanced routes over HTTP, queue jobs through the
official ``runpod`` worker protocol (``tests/jobserver.py`` checks every request). The entry
files hand the process over to flash_runtime's own worker, vendored in the artifact.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import APPS
from support import http

from flash_runtime.pack import build
from flash_runtime.pack.scaffold import init_project
from flash_runtime.testing.jobserver import JobServer
from flash_runtime.testing.net import free_port
from flash_runtime.testing.official import OfficialImage, environment
from flash_runtime.testing.workers import WorkerProcess


@pytest.fixture(scope="module")
def interpreter() -> Path:
    return environment()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = init_project(tmp_path_factory.mktemp("tpl") / "hello")
    return build(project).artifact


@pytest.fixture(scope="module")
def numpy_app(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("np") / "official_numpy"
    shutil.copytree(APPS / "official_numpy", project)
    result = build(project)
    assert "numpy" in {p.name for p in result.packages}  # Runpod's CPU images have no numpy
    return result.artifact


@pytest.fixture
def started() -> Iterator[list[WorkerProcess]]:
    workers: list[WorkerProcess] = []
    yield workers
    for worker in workers:
        worker.stop()


def wait_ready(worker: WorkerProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if worker.proc.poll() is not None:
            pytest.fail(f"the worker exited ({worker.proc.returncode}):\n{worker.log()}")
        try:
            if http(f"{worker.url}/ping", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    pytest.fail(f"no 200 from /ping in {timeout}s:\n{worker.log()}")


def start_lb(interpreter: Path, tmp: Path, artifact: Path, resource: str) -> WorkerProcess:
    image = OfficialImage(interpreter, tmp / f"app-{resource}")
    worker = image.start(artifact, resource, "lb", {}, port=free_port())
    wait_ready(worker)
    return worker


def test_lb_template_serves_through_the_official_lb_entry(
    interpreter: Path, template: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    worker = start_lb(interpreter, tmp_path, template, "lb_worker")
    started.append(worker)
    status, body = http(f"{worker.url}/process", {"input_data": {"hello": "world"}})
    assert status == 200 and body["echo"] == {"hello": "world"}
    assert http(f"{worker.url}/health")[0] == 200
    status, _ = http(f"{worker.url}/process", {"wrong": 1})
    assert status == 422  # our router validates: the hand-over happened
    log = worker.log()
    assert "handing the worker over to flash_runtime" in log
    assert "served by the image's uvicorn" in log  # in the image's process, not a second one
    assert (
        "FLASH_DISABLE_UNPACK" not in log and "extracted" not in log
    )  # extracted once, by the image
    assert '"GET /health HTTP/1.1" 200' not in log  # the image's access log is off


def test_lb_in_the_images_process_says_204_until_user_code_is_loaded(
    interpreter: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    project = tmp_path / "lb_slow_import"
    shutil.copytree(APPS / "lb_slow_import", project)
    image = OfficialImage(interpreter, tmp_path / "app")
    worker = image.start(build(project).artifact, "lb_slow_import", "lb", {}, port=free_port())
    started.append(worker)
    seen: list[int] = []
    deadline = time.monotonic() + 30
    while (not seen or seen[-1] != 200) and time.monotonic() < deadline:
        assert worker.proc.poll() is None, worker.log()
        try:
            status = http(f"{worker.url}/ping", timeout=2)[0]
        except OSError:
            time.sleep(0.05)
            continue
        if status == 204 and not seen:
            assert http(f"{worker.url}/hello")[0] == 503  # our lifecycle's, not the image's app
        seen.append(status)
        time.sleep(0.05)
    assert seen[0] == 204 and seen[-1] == 200, (seen, worker.log())
    assert set(seen) == {204, 200}
    assert http(f"{worker.url}/hello") == (200, {"hello": "world"})


def test_lb_with_a_separate_health_port_replaces_the_process(
    interpreter: Path, template: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    health = free_port()
    image = OfficialImage(interpreter, tmp_path / "app")
    worker = image.start(
        template, "lb_worker", "lb", {"PORT_HEALTH": str(health)}, port=free_port()
    )
    started.append(worker)
    wait_ready(worker)
    assert http(f"http://127.0.0.1:{health}/ping")[0] == 200  # the image's server has no such port
    status, body = http(f"{worker.url}/process", {"input_data": {"a": 1}})
    assert status == 200 and body["echo"] == {"a": 1}
    log = worker.log()
    assert "handing the worker over to flash_runtime" in log
    assert "served by the image's uvicorn" not in log


def test_a_failed_load_in_the_images_process_exits_1(interpreter: Path, tmp_path: Path) -> None:
    project = tmp_path / "lb_import_error"
    shutil.copytree(APPS / "lb_import_error", project)
    image = OfficialImage(interpreter, tmp_path / "app")
    worker = image.start(build(project).artifact, "lb_import_error", "lb", {}, port=free_port())
    assert worker.wait_exit(30) == 1, worker.log()
    log = worker.log()
    assert "served by the image's uvicorn" in log
    assert "worker cannot start" in log and "the model file is missing" in log


def test_queue_template_runs_on_our_job_loop_behind_the_official_entry(
    interpreter: Path, template: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    with JobServer(hold=1.0) as server:
        image = OfficialImage(interpreter, tmp_path / "app")
        worker = image.start(
            template, "cpu_worker", "qb", server.worker_env("official-1", ping_ms=1000)
        )
        started.append(worker)
        job = server.wait(server.submit({"input_data": {"text": "a b a"}}), timeout=30)
        assert job.result is not None, worker.log()
        assert job.result["output"]["words"] == 3
        worker.stop()
        assert not server.violations, server.violations
    log = worker.log()
    assert "handing the worker over to flash_runtime" in log
    assert f"job {job.id} done in" in log  # our loop's line, not the official loop's
    assert "Starting Serverless Worker" not in log


def test_numpy_app_bundles_numpy_and_our_sdk_wins(
    interpreter: Path, numpy_app: Path, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    worker = start_lb(interpreter, tmp_path, numpy_app, "stats_api")
    started.append(worker)
    status, body = http(f"{worker.url}/mean", {"values": [1, 2, 6]})
    assert status == 200 and body["mean"] == 3.0
    # The image preinstalls the reference SDK as runpod_flash; the artifact's alias wins.
    assert "/.flash-worker/core.zip/runpod_flash/" in body["sdk"]

    with JobServer(hold=1.0) as server:
        image = OfficialImage(interpreter, tmp_path / "app-q")
        queue = image.start(numpy_app, "stats_job", "qb", server.worker_env("np-1", ping_ms=1000))
        started.append(queue)
        job = server.wait(server.submit({"values": [1.5, 2.5]}), timeout=30)
        assert job.result is not None, queue.log()
        assert job.result["output"]["total"] == 4.0
        queue.stop()
        assert not server.violations


def test_artifact_for_our_images_says_so_on_an_official_image(
    interpreter: Path, tmp_path: Path
) -> None:
    project = init_project(tmp_path / "hello")
    artifact = build(project, image_repository="registry.example/me").artifact
    image = OfficialImage(interpreter, tmp_path / "app")
    worker = image.start(artifact, "lb_worker", "lb", {}, port=free_port())
    assert worker.wait_exit(30) != 0
    assert "built for flash_runtime's own images" in worker.log()


def test_core_is_vendored_for_the_artifacts_python(tmp_path: Path) -> None:
    """An artifact for another Python version carries that version's compiled core."""
    import tarfile

    project = init_project(tmp_path / "hello")
    result = build(project, python_version="3.13", output=tmp_path / "py313.tar.gz")
    with tarfile.open(result.artifact) as tar:
        names = tar.getnames()
    compiled = [n for n in names if n.startswith(".flash-worker/") and n.endswith(".so")]
    assert compiled and all("cpython-313-x86_64-linux-gnu" in n for n in compiled), compiled
    assert {f".flash-worker/{m}/__init__.py" for m in ("msgspec", "orjson")} <= set(names)
    assert ".flash-worker/core.zip" in names
    assert "handler_lb_worker.py" in names and "handler_cpu_worker.py" in names
