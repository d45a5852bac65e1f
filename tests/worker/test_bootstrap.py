"""The bootstrap as the image runs it: real artifacts, real processes, clear failures."""

from __future__ import annotations

import io
import json
import tarfile
import time
import urllib.request
from pathlib import Path

from conftest import APPS, build_app

from flash_runtime.pack import build
from flash_runtime.testing.net import free_port
from flash_runtime.testing.workers import WorkerProcess, start_worker


def _get_json(url: str, timeout: float = 20) -> object:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return json.loads(response.read())
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never answered 200")
        time.sleep(0.05)


def _failed(worker: WorkerProcess) -> str:
    assert worker.wait_exit(30) == 1, worker.log()
    return worker.log()


def test_only_the_current_resources_modules_are_imported(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    artifact = build_app("boot_multi", tmp_path)
    worker = start_worker(artifact, tmp_path / "app", "served", port=free_port())
    workers.append(worker)
    # other.py raises if a worker of `served` imports it, so a 200 also proves it was not.
    assert _get_json(f"{worker.url}/modules?probe=other") == {"imported": False}
    assert _get_json(f"{worker.url}/modules?probe=served") == {"imported": True}


def test_unknown_resource_is_a_clear_error(tmp_path: Path) -> None:
    artifact = build_app("boot_multi", tmp_path)
    log = _failed(start_worker(artifact, tmp_path / "app", "nope"))
    assert "resource 'nope' is not in the manifest (it has: other, served)" in log


def test_python_version_mismatch(tmp_path: Path) -> None:
    project = tmp_path / "boot_multi"
    build_app("boot_multi", tmp_path)
    artifact = build(project, skip_deps=True, python_version="3.13").artifact
    log = _failed(start_worker(artifact, tmp_path / "app", "served"))
    assert "built for Python 3.13" in log
    assert "flash build --python-version" in log


def test_malformed_manifest_names_the_key(tmp_path: Path) -> None:
    # FLASH_DISABLE_UNPACK: the code is already in FLASH_APP_DIR (here, the fixture itself).
    worker = start_worker(
        tmp_path / "unused.tar.gz",
        APPS / "boot_malformed_manifest",
        "api",
        extra_env={"FLASH_DISABLE_UNPACK": "1"},
        log_dir=tmp_path,
    )
    log = _failed(worker)
    assert "$.resources.api.workersMax" in log
    assert "Expected `int`, got `str`" in log


def test_a_manifest_with_only_what_serving_needs_boots(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """No version, python_version, generated_at, project_name, registry, resource_type, file
    or module paths, is_load_balanced or is_async: defaults and what the functions say."""
    app = tmp_path / "minimal"
    app.mkdir()
    (app / "served.py").write_text((APPS / "boot_multi" / "served.py").read_text())
    route = {"name": "modules", "module": "served", "http_method": "GET", "http_path": "/modules"}
    manifest = {"resources": {"served": {"functions": [route]}}}
    (app / "flash_manifest.json").write_text(json.dumps(manifest))
    worker = start_worker(
        tmp_path / "unused.tar.gz",
        app,
        "served",
        port=free_port(),
        extra_env={"FLASH_DISABLE_UNPACK": "1"},
        log_dir=tmp_path,
    )
    workers.append(worker)
    assert _get_json(f"{worker.url}/modules?probe=served") == {"imported": True}


def test_hostile_artifact_is_refused_before_anything_runs(tmp_path: Path) -> None:
    artifact = tmp_path / "hostile.tar.gz"
    with tarfile.open(artifact, "w:gz") as tar:
        member = tarfile.TarInfo("../escaped.py")
        payload = b"print('pwned')\n"
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    log = _failed(start_worker(artifact, tmp_path / "app", "served"))
    assert "../escaped.py" in log
    assert not (tmp_path / "escaped.py").exists()


def test_missing_artifact(tmp_path: Path) -> None:
    log = _failed(start_worker(tmp_path / "absent.tar.gz", tmp_path / "app", "served"))
    assert "absent.tar.gz" in log
    assert "FLASH_BUILD_ARTIFACT_PATH" in log


def test_every_resource_of_the_init_template_boots(
    tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    from flash_runtime.pack import init_project
    from flash_runtime.testing.jobserver import JobServer

    artifact = build(init_project(tmp_path / "hello")).artifact
    lb = start_worker(artifact, tmp_path / "app", "lb_worker", port=free_port())
    workers.append(lb)
    assert _get_json(f"{lb.url}/health") == {"status": "ok"}
    # One job server per queue endpoint; the workers share the app directory, as a host's do.
    with JobServer(hold=1.0) as cpu, JobServer(hold=1.0) as gpu:
        for resource, server in (("cpu_worker", cpu), ("gpu_worker", gpu)):
            env = server.worker_env(resource)
            workers.append(start_worker(artifact, tmp_path / "app", resource, extra_env=env))
        words = cpu.wait(cpu.submit({"input_data": {"text": "a b a"}}))
        hello = gpu.wait(gpu.submit({"input_data": {"message": "hi"}}))
    assert words.result is not None and words.result["output"]["words"] == 3
    assert hello.result is not None and hello.result["output"]["message"] == "hi"
