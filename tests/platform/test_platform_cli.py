"""The platform as a background process: ``flash platform start|status|stop``, ``flash logs``,
and what survives a crash of the platform."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import runpod
from click.testing import CliRunner
from conftest import build_app

from flash_runtime.cli import main as flash
from flash_runtime.platform import db, process
from flash_runtime.platform.model import EndpointSpec
from flash_runtime.platform.storage import save_endpoint
from flash_runtime.protocol.local import PlatformConfig
from flash_runtime.testing.net import free_port, wait_until

SLOW = "restart0000001"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PlatformConfig]:
    monkeypatch.setenv("FLASH_HOME", str(tmp_path / "flash"))
    monkeypatch.setenv("FLASH_PLATFORM_URL", f"http://127.0.0.1:{free_port()}")
    # Short protocol timings (see README: Local platform, knobs).
    monkeypatch.setenv("FLASH_PLATFORM_LONG_POLL_S", "5")
    monkeypatch.setenv("FLASH_PLATFORM_PING_INTERVAL_MS", "1000")
    monkeypatch.setenv("FLASH_PLATFORM_TICK_S", "0.1")
    monkeypatch.setenv("FLASH_PLATFORM_SHUTDOWN_GRACE_S", "5")
    config = PlatformConfig.load()
    yield config
    process.stop(config, timeout=20)


def cli(*args: str) -> Any:
    result = CliRunner().invoke(flash, list(args), catch_exceptions=False)
    return result


def status(*args: str) -> dict[str, Any]:
    result = cli("platform", "status", "--json", *args)
    assert result.exit_code == 0, result.output
    body: dict[str, Any] = json.loads(result.output)
    return body


def test_start_status_stop(home: PlatformConfig) -> None:
    assert status() == {
        "url": home.url,
        "api_key": home.api_key,
        "running": False,
        "pid": None,
        "endpoints": [],
    }
    started = cli("platform", "start")
    assert started.exit_code == 0, started.output
    assert home.url in started.output and home.api_key in started.output

    again = cli("platform", "start")
    assert again.exit_code != 0 and "already runs" in again.output
    process.ensure_running(home)  # what `flash deploy` calls: a no-op now

    running = status()
    assert running["running"] is True and running["url"] == home.url
    pid = running["pid"]
    assert process.healthy(home.url)["pid"] == pid  # type: ignore[index]

    stopped = cli("platform", "stop")
    assert stopped.exit_code == 0 and f"pid {pid}" in stopped.output
    assert status()["running"] is False
    assert process.healthy(home.url) is None

    process.ensure_running(home)  # starts it when it is not running
    assert status()["running"] is True


def test_a_process_counts_as_gone_once_it_has_exited_even_unreaped() -> None:
    # What `flash platform stop` waits for after the lock is released: a platform started by
    # another process is a zombie, or nothing, here once it has exited.
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert process._alive(child.pid)
        child.kill()
        wait_until(lambda: not process._alive(child.pid), what="the killed child to end")
        assert child.poll() is not None  # reaped only now: it was a zombie until here
        assert not process._alive(child.pid)
    finally:
        child.kill()
        child.wait()


def test_endpoints_and_queued_jobs_survive_a_platform_crash(
    home: PlatformConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = build_app("platform_slow", tmp_path / "apps")
    conn = db.connect(home.db_path)
    save_endpoint(
        conn,
        EndpointSpec(
            id=SLOW,
            name="slow-restart",
            resource_name="platform-slow",
            type="qb",
            app_id="app1",
            environment_id="env1",
            build_id="build1",
            artifact_path=artifact,
            workers_min=1,
            workers_max=1,
        ),
    )
    conn.close()
    info = process.start(home)
    monkeypatch.setattr(runpod, "api_key", home.api_key)
    monkeypatch.setattr(runpod, "endpoint_url_base", f"{home.url}/v2")
    endpoint = runpod.Endpoint(SLOW)
    jobs = [endpoint.run({"seconds": 1.5, "tag": f"r{i}"}) for i in range(3)]
    deadline = time.monotonic() + 30
    while jobs[0].status() != "IN_PROGRESS":
        assert time.monotonic() < deadline, "the first job never started"
        time.sleep(0.1)

    os.kill(info["pid"], signal.SIGKILL)  # a crash: nothing is shut down cleanly
    deadline = time.monotonic() + 10
    while process.running(home) is not None:
        assert time.monotonic() < deadline
        time.sleep(0.1)

    restarted = cli("platform", "start")
    assert restarted.exit_code == 0, restarted.output
    listed = status()["endpoints"]
    assert [(e["id"], e["name"], e["type"]) for e in listed] == [(SLOW, "slow-restart", "qb")]

    outputs = [job.output(timeout=90) for job in jobs]
    assert [o["tag"] for o in outputs] == ["r0", "r1", "r2"]
    assert endpoint.health()["jobs"]["retried"] >= 1  # the job that was running
    workers = status()["endpoints"][0]["workers"]
    assert len(workers) == 1 and workers[0]["state"] == "ready"  # workersMin came back

    logs = cli("logs", "slow-restart")
    assert logs.exit_code == 0
    assert "job r2: step" in logs.output and "slow-restart/" in logs.output
    assert cli("logs", "nosuchendpoint").exit_code != 0
