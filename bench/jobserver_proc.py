"""The loopback job server of the tests (``tests/jobserver.py``) in a process of its own.

Queue workers under benchmark poll it over HTTP exactly as they poll Runpod's job API. Running it
in its own process keeps its CPU apart from the benchmark driver's. The driver talks to it over
stdin/stdout, one JSON object per line:

* on start it prints ``{"port": P, "url": U}``;
* ``{"cmd": "env", "worker": ID}`` -> the worker's ``RUNPOD_*`` variables;
* ``{"cmd": "submit", "input": X, "n": N}`` -> queues N jobs at once: ``{"ids": [...]}``;
* ``{"cmd": "wait", "ids": [...], "timeout": S}`` -> once every job has its result:
  ``{"done": N, "failed": F, "failure": R, "first_taken": T, "last_done": T,
  "done_at": {...}, "results": {...}}`` (F: results with an ``error``; R: the first)
  (times are ``time.time()``), or ``{"error": "..."}``;
* ``{"cmd": "violations"}`` -> ``{"violations": [...]}`` (protocol checks of the tests).

Arguments: how long a long-poll is held (s), and the one-way network latency to emulate (s,
default 0: every request is handled that long after it was sent, and answered that long
later). It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from flash_runtime.testing.jobserver import JobServer


class BatchJobServer(JobServer):
    """Adds queueing many jobs in one step, so a batch is all there before a worker polls."""

    def submit_many(self, job_input: Any, n: int) -> list[str]:
        from flash_runtime.testing.jobserver import Job

        ids = [f"job-{next(self._ids)}" for _ in range(n)]
        with self._cond:
            for job_id in ids:
                self.jobs[job_id] = Job(job_id, job_input)
        asyncio.run_coroutine_threadsafe(self._enqueue_many(ids), self._loop).result(30)
        return ids

    async def _enqueue_many(self, ids: list[str]) -> None:
        self._queue.extend(ids)
        await self._notify()

    def wait_all(self, ids: list[str], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            with self._cond:
                jobs = [self.jobs[i] for i in ids]
                if all(j.state in ("done", "stopped") for j in jobs):
                    break
            if time.monotonic() > deadline:
                done = sum(j.state == "done" for j in jobs)
                return {"error": f"{done} of {len(ids)} jobs done after {timeout}s"}
            time.sleep(0.02)
        failed = [j for j in jobs if not isinstance(j.result, dict) or "error" in j.result]
        return {
            "done": len(jobs),
            "failed": len(failed),
            "failure": failed[0].result if failed else None,
            "first_taken": min(j.taken_at or 0.0 for j in jobs),
            "last_done": max(j.done_at or 0.0 for j in jobs),
            "done_at": {j.id: j.done_at for j in jobs},
            "results": {j.id: j.result for j in jobs[:3]},
        }


def main() -> None:
    hold = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    delay = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0  # one-way network latency, s
    with BatchJobServer(hold=hold, delay=delay) as server:
        print(json.dumps({"port": server.port, "url": server.url}), flush=True)
        for line in sys.stdin:
            if not line.strip():
                continue
            request = json.loads(line)
            cmd = request["cmd"]
            reply: dict[str, Any]
            if cmd == "env":
                reply = server.worker_env(request.get("worker", "worker-1"), ping_ms=60_000)
            elif cmd == "submit":
                reply = {"ids": server.submit_many(request.get("input", {}), request.get("n", 1))}
            elif cmd == "wait":
                reply = server.wait_all(request["ids"], request.get("timeout", 120))
            elif cmd == "violations":
                with server._cond:
                    reply = {"violations": list(server.violations)}
            else:
                reply = {"error": f"unknown command {cmd!r}"}
            print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
