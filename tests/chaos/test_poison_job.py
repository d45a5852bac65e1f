"""F4: a job that kills its worker is tried a bounded number of times, then FAILED with the
reason, while the crash-restart backoff grows and the jobs behind it run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import runpod
from conftest import build_app
from support import endpoint_spec

from flash_runtime.platform.state import EndpointState
from flash_runtime.platform.supervisor import Worker
from flash_runtime.testing.platform import InProcessPlatform

POISON = "poison0000001a"


def test_a_poison_job_fails_after_its_attempts_and_the_queue_moves_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = build_app("qb_poison", tmp_path / "apps")
    with InProcessPlatform(tmp_path / "home") as platform:
        assert platform.runtime is not None
        platform.apply(endpoint_spec(POISON, "qb-poison", artifact, workers_max=1))
        monkeypatch.setattr(runpod, "api_key", platform.config.api_key)
        monkeypatch.setattr(runpod, "endpoint_url_base", f"{platform.url}/v2")
        endpoint = runpod.Endpoint(POISON)
        started = time.monotonic()
        poison = endpoint.run({"die": True})
        behind = [endpoint.run({"tag": f"after{i}"}) for i in range(3)]

        final = poison._fetch_job()
        deadline = time.monotonic() + 60
        while final["status"] not in ("FAILED", "COMPLETED") and time.monotonic() < deadline:
            time.sleep(0.1)
            final = poison._fetch_job()
        failed_after = time.monotonic() - started
        assert final["status"] == "FAILED"
        assert "WorkerDied" in str(final["error"]) and "3 attempts" in str(final["error"])
        assert [job.output(timeout=60) for job in behind] == [
            {"tag": f"after{i}"} for i in range(3)
        ]
        behind_done = time.monotonic() - started

        health = endpoint.health()
        assert health["jobs"]["failed"] == 1 and health["jobs"]["completed"] == 3
        print(
            f"\npoison job: FAILED after 3 attempts in {failed_after:.1f}s; "
            f"the 3 jobs behind it done {behind_done:.1f}s after submission"
        )


def test_a_worker_dying_with_work_keeps_the_backoff_growing(tmp_path: Path) -> None:
    """Ready long enough to count as stable, but dead holding a job: not a fresh failure."""
    spec = endpoint_spec("e", "r", tmp_path / "a.tar.gz")
    ep = EndpointState(spec=spec, generation="g", app_dir=tmp_path)
    delays = []
    for n in range(4):
        worker = Worker(id=f"w{n}", endpoint_id="e", generation="g", log_path=None)
        worker.ready_at = 0.0  # ready 100 s before it died
        delays.append(ep.crashed(worker, 100.0, lambda k: 0.5 * 2 ** (k - 1), held_work=True))
    assert delays == [0.5, 1.0, 2.0, 4.0]
    idle = Worker(id="idle", endpoint_id="e", generation="g", log_path=None)
    idle.ready_at = 0.0
    assert ep.crashed(idle, 100.0, lambda k: 0.5 * 2 ** (k - 1)) == 0.5  # a fresh failure
