"""Shared fixtures: an isolated FLASH_HOME per session, the control plane over HTTP, and workers
stopped after each test.

The helpers themselves live in :mod:`flash_runtime.testing`; ``build_app`` here builds a fixture
app of ``tests/apps/`` by name.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import Containers, ControlPlaneServer, serve_control_plane

from flash_runtime.testing import workers as _workers
from flash_runtime.testing.workers import WorkerProcess

APPS = Path(__file__).parent / "apps"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_flash_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never touch the developer's ~/.flash; share one dependency cache per test session.

    Platforms run their workers in the platform's own environment (fast, and measured by
    coverage) unless a test asks for image environments (``FLASH_PLATFORM_WORKER_ENV=image``),
    which are kept under ``build/`` across runs; no test sees this machine's GPUs unless it
    sets ``FLASH_PLATFORM_GPUS`` itself, and no platform listens with TLS unless the test sets
    ``FLASH_PLATFORM_TLS=1``."""
    monkeypatch.setenv("FLASH_HOME", str(tmp_path_factory.getbasetemp() / "flash_home"))
    # The packer's caches, shared by every home a test makes (tests that own theirs say so).
    monkeypatch.setenv("FLASH_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "flash_cache"))
    monkeypatch.delenv("FLASH_RESOURCE_NAME", raising=False)
    monkeypatch.setenv("FLASH_PLATFORM_WORKER_ENV", "platform")
    monkeypatch.setenv("FLASH_PLATFORM_IMAGE_ENVS", str(REPO / "build" / "image-envs"))
    monkeypatch.setenv("FLASH_PLATFORM_GPUS", "none")
    # The TLS front (its certificates are made per home) only where a test needs it: the
    # Runpod SDK 2.0's tests turn it on.
    monkeypatch.setenv("FLASH_PLATFORM_TLS", "0")
    monkeypatch.delenv("FLASH_PLATFORM_WORKERS", raising=False)
    # Never this machine's stored Runpod key (flash login's file), nor its RUNPOD_API_KEY.
    monkeypatch.setenv(
        "FLASH_CREDENTIALS_FILE", str(tmp_path_factory.getbasetemp() / "runpod_config.toml")
    )
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    # In-process "scripts" see not_deployed as it is; scripts in subprocesses provision.
    monkeypatch.setenv("FLASH_LIVE_PROVISIONING", "0")


@pytest.fixture
def anyio_backend() -> str:
    """Async tests run on asyncio, as workers do (trio, which selenium brings, is not ours)."""
    return "asyncio"


def build_app(name: str, dest: Path) -> Path:
    """Copy fixture app ``tests/apps/<name>`` to ``dest`` and build it (no dependencies)."""
    return _workers.build_app(APPS / name, dest)


@pytest.fixture
def control_plane(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ControlPlaneServer]:
    """The control plane over real HTTP on a free port, driving a recording runtime."""
    with serve_control_plane(tmp_path, monkeypatch) as served:
        yield served


@pytest.fixture
def containers() -> Iterator[Containers]:
    """Worker containers, removed at the end of the test."""
    started = Containers()
    yield started
    started.close()


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Collects started workers and stops every one at the end of the test."""
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()
