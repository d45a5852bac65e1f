"""Task pods: what the Runpod SDK 2.0's ``@app.task`` calls run on, one pod per call.

The 2.0 client deploys a pod (GraphQL ``deployCpuPod`` or ``podFindAndDeployOnDemand`` with a
``runpod/task`` image, a ``RUNPOD_TASK_TOKEN`` and ``ports: "8080/http"``), talks to the task
runner inside it through Runpod's HTTP proxy, ``https://{pod_id}-8080.proxy.runpod.net``, and
deletes it (REST ``DELETE /v2/pods/{pod_id}``). Here a pod is a process running our runner
(``worker/task.py``) in the task image's environment (``imageenvs.py``: the worker core, the
2.0 SDK and cloudpickle), on a loopback port of its own, with the pod's env (secrets rendered).

LOCAL, and the one way our answers differ in shape from Runpod's: the proxy's host is fixed in
the SDK (``proxy.runpod.net``, port 443), which no local platform can answer without changing
the machine's name resolution. So the pod ids the platform hands out carry its own address:
``{short}.flash.localhost:{tls port}/pods/{short}/proxy?to=``. The SDK appends
``-8080.proxy.runpod.net/ping`` to that, which lands in the query; ``/pods/{short}/proxy``
(reached through the TLS front, whose certificate covers ``*.flash.localhost``) passes the path
after ``proxy.runpod.net`` on to the pod's runner, as Runpod's proxy does. The id is opaque to
the SDK otherwise (it quotes it into ``/v2/pods/{id}``), so nothing else changes.

Pods with ``volumeMounts`` are refused (tasks' storage is not emulated); a pod stops when it is
deleted, when its runner gives up on an absent client (``RUNPOD_TASK_IDLE_TIMEOUT``), or with
the platform.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from ..protocol.local import PlatformConfig
from . import imageenvs
from .controlplane_store import runpod_id
from .secretstore import SecretStore

log = logging.getLogger("flash_runtime.platform.pods")

RUNNER = "flash_runtime.worker.task"
PROXY_HOST = "proxy.runpod.net"
MAX_PODS = 32
STOP_GRACE_S = 5.0


class PodError(ValueError):
    """A pod the platform refuses to deploy; the message says why."""


@dataclass
class Pod:
    id: str
    short: str
    name: str
    image: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pods:
    def __init__(self, config: PlatformConfig, secrets: SecretStore) -> None:
        self.config = config
        self.secrets = secrets
        self._pods: dict[str, Pod] = {}  # by short id
        self._session: aiohttp.ClientSession | None = None

    def pod_id(self, short: str) -> str:
        return f"{short}.flash.localhost:{self.config.tls_port}/pods/{short}/proxy?to="

    def find(self, pod_id: str) -> Pod | None:
        short = pod_id.partition(".")[0]
        return self._pods.get(short)

    async def deploy(self, data: dict[str, Any], *, gpu: bool) -> dict[str, Any]:
        image = str(data.get("imageName") or "").strip()
        if not image:
            raise PodError("a pod needs an imageName")
        if data.get("volumeMounts"):
            raise PodError(
                "pods with volumeMounts are not run by the local platform (task storage is not "
                "emulated); pass data to the task as arguments instead"
            )
        if len([p for p in self._pods.values() if p.process.returncode is None]) >= MAX_PODS:
            raise PodError(f"{MAX_PODS} pods are running already: terminate some first")
        kind = imageenvs.image_kind(image)
        if kind != "sdk-task":
            log.info("pod image %s is not a Runpod task image: it runs the task runner", image)
        python = image.rpartition(":py")[2].split("-")[0] if ":py" in image else ""
        python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
        env_of_image = await asyncio.to_thread(
            imageenvs.environment, self.config.images_dir, "sdk-task", python
        )
        short = "tp" + runpod_id(12).lower()
        port = _free_port()
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FLASH_", "RUNPOD_")) or k == "FLASH_HOME"
        }
        for item in data.get("env") or []:
            env[str(item["key"])] = str(item["value"])
        pod_id = self.pod_id(short)
        env.update(
            PYTHONUNBUFFERED="1",
            RUNPOD_POD_ID=pod_id,
            RUNPOD_TASK_PORT=str(port),
            FLASH_HOST="127.0.0.1",
            RUNPOD_API_BASE_URL=self.config.url,
        )
        if gpu:
            env.setdefault("CUDA_VISIBLE_DEVICES", "")
        env = self.secrets.render(env)
        env_of_image.worker_env(env)
        logs = self.config.logs_dir / "pods"
        logs.mkdir(parents=True, exist_ok=True)
        log_path = logs / f"{short}.log"
        with open(log_path, "ab") as out:
            process = await asyncio.create_subprocess_exec(
                str(env_of_image.interpreter),
                "-m",
                RUNNER,
                env=env,
                cwd=str(logs),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        name = str(data.get("name") or short)
        self._pods[short] = Pod(pod_id, short, name, image, port, process, log_path)
        log.info("pod %s (%s) on port %d: %s", short, name, port, image)
        return {"id": pod_id, "desiredStatus": "RUNNING", "name": name, "imageName": image}

    async def terminate(self, pod_id: str) -> bool:
        pod = self.find(pod_id)
        if pod is None:
            return False
        self._pods.pop(pod.short, None)
        await _stop(pod.process)
        return True

    async def close(self) -> None:
        pods, self._pods = list(self._pods.values()), {}
        await asyncio.gather(*(_stop(p.process) for p in pods))
        if self._session is not None:
            await self._session.close()

    async def proxy(
        self, short: str, target: str, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        """Pass a request on to pod ``short``'s runner; (status, body, content type)."""
        pod = self._pods.get(short)
        if pod is None or pod.process.returncode is not None:
            return 404, b'{"error": "no such pod"}', "application/json"
        _, found, path = target.partition(PROXY_HOST)
        if not found or not path.startswith("/"):
            return 400, b'{"error": "not a pod proxy URL"}', "application/json"
        if self._session is None:
            self._session = aiohttp.ClientSession()
        wanted = {
            k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type")
        }
        try:
            async with self._session.request(
                method,
                f"http://127.0.0.1:{pod.port}{path}",
                data=body or None,
                headers=wanted,
                timeout=aiohttp.ClientTimeout(total=120),
            ) as response:
                return (
                    response.status,
                    await response.read(),
                    response.headers.get("Content-Type", "application/json"),
                )
        except aiohttp.ClientConnectionError:
            # The runner is not listening yet: what Runpod's proxy answers for a booting pod.
            return 502, b'{"error": "the pod is not ready"}', "application/json"


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
