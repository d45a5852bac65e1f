"""What held under fire, kept: no accepted job is lost when workers are SIGKILLed at random
while they run jobs, nor when the platform itself is SIGKILLed with jobs queued; hundreds of
concurrent clients get no error. Delivery is at-least-once: a job a killed worker was running
runs again (counted)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import shutil
import signal
from collections import Counter
from pathlib import Path

import aiohttp
import runpod
from conftest import APPS
from support import FlashCLI

from flash_runtime.testing.net import wait_until

JOBS = 60
WORKER_KILLS = 10
CLIENTS = 512


def test_no_accepted_job_is_lost_under_worker_and_platform_kills(tmp_path: Path) -> None:
    home = tmp_path / "home"
    project = tmp_path / "chaos"
    shutil.copytree(APPS / "chaos_jobs", project)
    flash = FlashCLI(home, project)
    url, status = flash.url, flash.status

    rng = random.Random(13)
    try:
        endpoint = json.loads(flash("deploy", "--json"))["endpoints"][0]["id"]
        key = status()["api_key"]
        runpod.endpoint_url_base = f"{url}/v2"
        client = runpod.Endpoint(endpoint, api_key=key)
        jobs = [client.run({"tag": f"t{i}", "seconds": 0.2}) for i in range(JOBS)]

        killed = 0
        while killed < WORKER_KILLS:
            workers = [w for e in status()["endpoints"] for w in e["workers"] if w.get("pid")]
            busy = [w for w in workers if w.get("jobs")]
            if busy:
                os.kill(rng.choice(busy)["pid"], signal.SIGKILL)
                killed += 1
            wait_until(lambda: True, timeout=0.3)  # a tick between kills

        platform_pid = status()["pid"]
        os.kill(platform_pid, signal.SIGKILL)
        wait_until(lambda: not status()["running"], timeout=15, what="the platform to be gone")
        flash("platform", "start")

        outputs = [job.output(timeout=180) for job in jobs]
        assert [o["tag"] for o in outputs] == [f"t{i}" for i in range(JOBS)]
        runs = Counter(
            match
            for log in (home / "platform" / "logs" / endpoint).glob("*.log*")
            for match in re.findall(r"job (t\d+): start", log.read_text(errors="replace"))
        )
        twice = sum(1 for n in runs.values() if n > 1)
        print(
            f"\nkills: {JOBS} accepted, {len(outputs)} completed, 0 lost, {twice} run more "
            f"than once, under {WORKER_KILLS} worker SIGKILLs and one platform SIGKILL"
        )
        assert set(runs) == {f"t{i}" for i in range(JOBS)}

        async def load() -> Counter[int]:
            async with aiohttp.ClientSession() as session:

                async def one(i: int) -> int:
                    async with session.post(
                        f"{url}/v2/{endpoint}/run",
                        json={"input": {"tag": f"l{i}", "seconds": 0}},
                        headers={"Authorization": f"Bearer {key}"},
                    ) as resp:
                        return resp.status

                return Counter(await asyncio.gather(*(one(i) for i in range(CLIENTS))))

        codes = asyncio.run(load())
        print(f"load: {CLIENTS} concurrent clients: {dict(codes)}")
        assert codes == Counter({200: CLIENTS})
    finally:
        flash.stop()
