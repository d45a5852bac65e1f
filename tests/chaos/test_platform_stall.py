"""F9: a platform that was itself stopped for longer than a worker lease does not take its
healthy, busy workers for hung when it wakes: the running job finishes on its worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import runpod
from conftest import APPS

from flash_runtime.testing.net import free_port, wait_until

FLASH = [sys.executable, "-c", "from flash_runtime.cli import main; main()"]


def test_a_stalled_platform_keeps_its_busy_workers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    url = f"http://127.0.0.1:{free_port()}"
    env.update(FLASH_HOME=str(tmp_path / "home"), FLASH_PLATFORM_URL=url)
    # A short lease (2 pings of 1 s), so that a 4 s stall is twice as long as it.
    env.update(FLASH_PLATFORM_PING_INTERVAL_MS="1000", FLASH_PLATFORM_LEASE_PINGS="2")
    project = tmp_path / "slow"
    shutil.copytree(APPS / "platform_slow", project)

    def flash(*args: str) -> str:
        done = subprocess.run(
            [*FLASH, *args], cwd=project, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        deployed = json.loads(flash("deploy", "--json"))
        endpoint = next(e["id"] for e in deployed["endpoints"] if e["resource"] == "platform-slow")
        key = json.loads(flash("platform", "status", "--json"))["api_key"]
        pid = json.loads(flash("platform", "status", "--json"))["pid"]
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
        subprocess.run([*FLASH, "platform", "stop"], cwd=project, env=env, timeout=60)
