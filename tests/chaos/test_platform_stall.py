"""F9: a platform that was itself stopped for longer than a worker lease does not take its
healthy, busy workers for hung when it wakes: the running job finishes on its worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import runpod
from conftest import APPS
from support import FlashCLI

from flash_runtime.testing.net import wait_until


def test_a_stalled_platform_keeps_its_busy_workers(tmp_path: Path) -> None:
    project = tmp_path / "slow"
    shutil.copytree(APPS / "platform_slow", project)
    # A short lease (2 pings of 1 s), so that a 4 s stall is twice as long as it.
    flash = FlashCLI(
        tmp_path / "home",
        project,
        FLASH_PLATFORM_PING_INTERVAL_MS="1000",
        FLASH_PLATFORM_LEASE_PINGS="2",
    )
    url = flash.url

    try:
        deployed = json.loads(flash("deploy", "--json"))
        endpoint = next(e["id"] for e in deployed["endpoints"] if e["resource"] == "platform-slow")
        key, pid = flash.status()["api_key"], flash.status()["pid"]
        runpod.endpoint_url_base = f"{url}/v2"
        job = runpod.Endpoint(endpoint, api_key=key).run({"seconds": 6, "tag": "stall"})
        wait_until(lambda: job.status() == "IN_PROGRESS", what="the job to start")

        os.kill(pid, signal.SIGSTOP)
        time.sleep(4)
        os.kill(pid, signal.SIGCONT)

        output = job.output(timeout=60)
        assert output["tag"] == "stall"
        final = job._fetch_job()
        assert final["workerId"] == output["worker"]  # finished where it started
        health = runpod.Endpoint(endpoint, api_key=key).health()
        assert health["jobs"]["retried"] == 0 and health["jobs"]["completed"] == 1
        log = (tmp_path / "home" / "platform" / "logs" / "platform.log").read_text()
        assert "leases start anew" in log and "queued again" not in log
    finally:
        flash.stop()
