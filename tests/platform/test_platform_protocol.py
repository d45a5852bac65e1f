"""The serverless API and the worker protocol over HTTP, with a hand-driven worker.

The endpoint here has ``workersMax 0``, so the platform starts no worker of its own; the test
plays the worker, speaking the runpod SDK's protocol with the URLs and key a worker gets.
End-to-end runs with real workers are in ``test_platform.py``.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from flash_runtime.platform.model import EndpointSpec
from flash_runtime.testing.net import wait_until_async
from flash_runtime.testing.platform import FAST, InProcessPlatform

EP = "protoep0000001"
FORM = {"Content-Type": "application/x-www-form-urlencoded", "charset": "utf-8"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessPlatform]:
    home = tmp_path_factory.mktemp("protocol")
    artifact = home / "artifact.tar.gz"
    artifact.write_bytes(b"not used: no worker is started")
    settings = replace(FAST, long_poll_s=1.0, ping_interval_ms=1000, lease_pings=2)
    with InProcessPlatform(home / "flash", settings) as p:
        p.apply(
            EndpointSpec(
                id=EP,
                name="manual",
                resource_name="manual",
                type="qb",
                app_id="app",
                environment_id="env",
                build_id="b1",
                artifact_path=artifact,
                workers_min=0,
                workers_max=0,
            )
        )
        yield p


class Client:
    """A user of the serverless API and a hand-driven worker, on one aiohttp session."""

    def __init__(self, platform: InProcessPlatform, session: aiohttp.ClientSession) -> None:
        self.base = f"{platform.url}/v2/{EP}"
        self.session = session
        self.user = {"Authorization": f"Bearer {platform.config.api_key}"}
        assert platform.runtime is not None
        self.worker_key = platform.runtime.worker_key

    async def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(
            method, f"{self.base}/{path}", json=body, headers=self.user
        ) as resp:
            return resp.status, await resp.json() if resp.content_length != 0 else None

    def _worker_url(self, kind: str, worker: str, job: str | None = None) -> str:
        tail = f"/{job}" if job else ""
        return f"{self.base}/{kind}/{worker}{tail}?gpu=local"

    async def take(self, worker: str, batch: int = 1) -> tuple[int, Any]:
        kind = "job-take-batch" if batch > 1 else "job-take"
        url = self._worker_url(kind, worker)
        url += f"&batch_size={batch}" if batch > 1 else ""
        async with self.session.get(
            f"{url}&job_in_progress=0", headers={"Authorization": self.worker_key}
        ) as resp:
            if resp.status == 204:
                return 204, None
            assert resp.content_type == "application/json"
            return resp.status, await resp.json()

    async def done(self, worker: str, job: str, result: Any, stream: bool = False) -> int:
        url = self._worker_url("job-done", worker, job) + f"&isStream={str(stream).lower()}"
        async with self.session.post(
            url, data=json.dumps(result), headers={"Authorization": self.worker_key, **FORM}
        ) as resp:
            return resp.status

    async def chunk(self, worker: str, job: str, output: Any) -> int:
        url = self._worker_url("job-stream", worker, job) + "&isStream=false"
        async with self.session.post(
            url, data=json.dumps({"output": output}), headers={"Authorization": self.worker_key}
        ) as resp:
            return resp.status

    async def ping(self, worker: str, job_ids: list[str]) -> int:
        params = {"runpod_version": "1.12.0"}
        if job_ids:
            params["job_id"] = ",".join(job_ids)
        async with self.session.get(
            self._worker_url("ping", worker),
            params=params,
            headers={"Authorization": self.worker_key},
        ) as resp:
            return resp.status

    async def stops(self, worker: str) -> tuple[int, Any]:
        async with self.session.get(
            self._worker_url("job-stop", worker), headers={"Authorization": self.worker_key}
        ) as resp:
            return resp.status, (await resp.json() if resp.status == 200 else None)


@asynccontextmanager
async def client(platform: InProcessPlatform) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession() as session:
        c = Client(platform, session)
        await c.api("POST", "purge-queue")
        yield c


def held(platform: InProcessPlatform) -> int:
    """How many worker long-polls the platform holds for the endpoint."""
    assert platform.runtime is not None
    return sum(not taker.done() for taker in platform.runtime.jobs.queue(EP).takers)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_job_take_is_a_long_poll_and_hands_over_a_new_job(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            started = time.monotonic()
            assert await c.take("w-idle") == (204, None)
            assert time.monotonic() - started >= 0.9  # held for the whole long-poll

            poll = asyncio.create_task(c.take("w-take"))
            await wait_until_async(lambda: held(platform), what="the poll to be held")
            status, run_body = await c.api("POST", "run", {"input": {"prompt": "hi"}})
            assert status == 200 and run_body["status"] == "IN_QUEUE"
            status, job = await asyncio.wait_for(poll, 2)
            assert status == 200
            assert job == {"id": run_body["id"], "input": {"prompt": "hi"}}

            assert await c.done("w-take", job["id"], {"output": {"answer": 42}}) == 200
            status, body = await c.api("GET", f"status/{job['id']}")
            assert status == 200
            assert body["status"] == "COMPLETED"
            assert body["output"] == {"answer": 42}
            assert body["workerId"] == "w-take"
            assert isinstance(body["delayTime"], int) and isinstance(body["executionTime"], int)

    run(test())


def test_batch_take_stream_and_error_results(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            ids = [(await c.api("POST", "run", {"input": {"n": n}}))[1]["id"] for n in range(3)]
            status, jobs = await c.take("w-batch", batch=2)
            assert status == 200 and [j["id"] for j in jobs] == ids[:2]

            await c.chunk("w-batch", ids[0], {"token": "a"})
            await c.chunk("w-batch", ids[0], {"token": "b"})
            _, streamed = await c.api("GET", f"stream/{ids[0]}")
            assert streamed["status"] == "IN_PROGRESS"
            assert streamed["stream"] == [{"output": {"token": "a"}}, {"output": {"token": "b"}}]
            await c.done("w-batch", ids[0], {"output": [{"token": "a"}, {"token": "b"}]}, True)
            _, streamed = await c.api("POST", f"stream/{ids[0]}")
            assert streamed == {"id": ids[0], "status": "COMPLETED", "stream": []}

            error = '{"error_type": "RuntimeError", "error_message": "boom"}'
            await c.done("w-batch", ids[1], {"error": error})
            _, body = await c.api("GET", f"status/{ids[1]}")
            assert body["status"] == "FAILED" and body["error"] == error

            _, health = await c.api("GET", "health")
            assert health["jobs"]["completed"] >= 1
            assert health["jobs"]["failed"] >= 1
            assert health["jobs"]["inQueue"] == 1
            assert {"idle", "running"} <= health["workers"].keys()

    run(test())


def test_cancel_and_timeout_reach_the_worker_through_job_stop(
    platform: InProcessPlatform,
) -> None:
    async def test() -> None:
        async with client(platform) as c:
            _, cancelled = await c.api("POST", "run", {"input": {}})
            _, timed = await c.api(
                "POST", "run", {"input": {}, "policy": {"executionTimeout": 300}}
            )
            _, jobs = await c.take("w-stop", batch=2)
            assert {j["id"] for j in jobs} == {cancelled["id"], timed["id"]}

            assert await c.api("POST", f"cancel/{cancelled['id']}") == (
                200,
                {"id": cancelled["id"], "status": "CANCELLED"},
            )
            assert await c.stops("w-stop") == (200, {"jobsToStop": [cancelled["id"]]})

            _, stops = await c.stops("w-stop")  # held until the timeout fires
            assert stops == {"jobsToStop": [timed["id"]]}
            _, body = await c.api("GET", f"status/{timed['id']}")
            assert body["status"] == "TIMED_OUT"

            # Late results are acknowledged and dropped.
            assert await c.done("w-stop", timed["id"], {"output": "late"}) == 200
            _, body = await c.api("GET", f"status/{timed['id']}")
            assert body["status"] == "TIMED_OUT" and "output" not in body

    run(test())


def test_a_silent_worker_loses_its_job_to_another(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            _, job = await c.api("POST", "run", {"input": {"n": 1}})
            assert (await c.take("w-silent"))[1]["id"] == job["id"]
            # w-silent never pings again: after lease_pings intervals the job is queued again.
            deadline = time.monotonic() + 10
            again = None
            while again is None and time.monotonic() < deadline:
                _, again = await c.take("w-alive")
            assert again is not None and again["id"] == job["id"]
            await c.done("w-alive", job["id"], {"output": "ok"})
            _, health = await c.api("GET", "health")
            assert health["jobs"]["retried"] >= 1

    run(test())


def test_a_job_missing_from_the_worker_pings_is_queued_again(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            _, job = await c.api("POST", "run", {"input": {}})
            assert (await c.take("w-forgot"))[1]["id"] == job["id"]
            await c.ping("w-forgot", [job["id"]])  # it runs the job: kept
            _, body = await c.api("GET", f"status/{job['id']}")
            assert body["status"] == "IN_PROGRESS"
            deadline = time.monotonic() + 10
            while body["status"] == "IN_PROGRESS" and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                await c.ping("w-forgot", [])  # it does not know the job
                _, body = await c.api("GET", f"status/{job['id']}")
            assert body["status"] == "IN_QUEUE"

    run(test())


def test_a_poll_abandoned_by_its_worker_gets_no_job(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            poll = asyncio.create_task(c.take("w-gone"))
            await wait_until_async(lambda: held(platform), what="the poll to be held")
            poll.cancel()  # the worker hangs up while its poll is held
            await wait_until_async(lambda: not held(platform), what="the poll to be let go")
            _, job = await c.api("POST", "run", {"input": {}})
            _, body = await c.api("GET", f"status/{job['id']}")
            assert body["status"] == "IN_QUEUE"
            assert (await c.take("w-next"))[1]["id"] == job["id"]

    run(test())


def test_runsync_answers_with_the_status_when_wait_expires(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            started = time.monotonic()
            status, body = await c.api("POST", "runsync?wait=300", {"input": {"q": 1}})
            assert time.monotonic() - started >= 0.29
            assert status == 200 and body["status"] == "IN_QUEUE" and body["id"]

            runsync = asyncio.create_task(c.api("POST", "runsync", {"input": {"q": 2}}))
            while not runsync.done():
                _, jobs = await c.take("w-sync", batch=2)
                for job in jobs or []:
                    await c.done("w-sync", job["id"], {"output": job["input"]})
            status, body = await runsync
            assert body["status"] == "COMPLETED" and body["output"] == {"q": 2}

    run(test())


def test_purge_queue(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            ids = [(await c.api("POST", "run", {"input": n}))[1]["id"] for n in range(3)]
            assert await c.api("POST", "purge-queue") == (
                200,
                {"removed": 3, "status": "completed"},
            )
            _, body = await c.api("GET", f"status/{ids[0]}")
            assert body["status"] == "CANCELLED"

    run(test())


def test_errors(platform: InProcessPlatform) -> None:
    async def test() -> None:
        async with client(platform) as c:
            base = c.base
            s = c.session
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with s.post(f"{base}/run", json={"input": {}}, headers=headers) as r:
                    assert r.status == 401 and "error" in await r.json()
            # the raw key works too, as on Runpod
            raw = {"Authorization": c.user["Authorization"].removeprefix("Bearer ")}
            async with s.get(f"{base}/health", headers=raw) as r:
                assert r.status == 200
            async with s.post(
                f"{platform.url}/v2/nosuchendpoint/run", json={"input": {}}, headers=c.user
            ) as r:
                assert r.status == 404 and "nosuchendpoint" in (await r.json())["error"]
            async with s.get(f"{base}/status/nosuchjob", headers=c.user) as r:
                assert r.status == 404
            big = b'{"input": "' + b"x" * (20 * 1024 * 1024) + b'"}'
            async with s.post(f"{base}/run", data=io.BytesIO(big), headers=c.user) as r:
                assert r.status == 413 and "error" in await r.json()
            async with s.post(f"{base}/run", json={"no": "input"}, headers=c.user) as r:
                assert r.status == 400
            # workers authenticate with the worker key, never the user's
            async with s.get(
                f"{base}/job-take/w?gpu=local", headers={"Authorization": raw["Authorization"]}
            ) as r:
                assert r.status == 401

    run(test())


def test_webhook_gets_the_result(platform: InProcessPlatform) -> None:
    from aiohttp import web

    async def test() -> None:
        received: asyncio.Queue[Any] = asyncio.Queue()

        async def hook(request: web.Request) -> web.Response:
            await received.put(await request.json())
            return web.Response()

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with client(platform) as c:
                _, job = await c.api(
                    "POST", "run", {"input": 7, "webhook": f"http://127.0.0.1:{port}/hook"}
                )
                await c.take("w-hook")
                await c.done("w-hook", job["id"], {"output": 49})
                delivered = await asyncio.wait_for(received.get(), 10)
                assert delivered["id"] == job["id"]
                assert delivered["status"] == "COMPLETED" and delivered["output"] == 49
        finally:
            await runner.cleanup()

    run(test())


def test_removing_an_endpoint_cancels_its_jobs(platform: InProcessPlatform) -> None:
    assert platform.runtime is not None
    spec = replace(platform.runtime.endpoints[EP].spec, id="protoremove001", name="removed")
    platform.apply(spec)

    async def submit() -> str:
        async with aiohttp.ClientSession() as session:
            c = Client(platform, session)
            c.base = f"{platform.url}/v2/{spec.id}"
            _, job = await c.api("POST", "run", {"input": 1})
            return str(job["id"])

    job_id = run(submit())
    platform.remove(spec.id)

    async def after() -> None:
        assert platform.runtime is not None
        job = platform.runtime.jobs.get(job_id)
        assert job is not None and job.status.value == "CANCELLED"
        assert platform.runtime.url_of(spec.id) is None

    platform.call(after())

    async def gone() -> None:
        async with aiohttp.ClientSession() as session:
            c = Client(platform, session)
            c.base = f"{platform.url}/v2/{spec.id}"
            assert (await c.api("GET", "health"))[0] == 404

    run(gone())
