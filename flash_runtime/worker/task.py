"""A task pod's runner: one Runpod SDK 2.0 ``@app.task`` call per pod, over HTTP.

``python -m flash_runtime.worker.task`` is what a task pod boots into (the Runpod SDK 2.0's
``runpod/task`` images; on the local platform, a process per pod). The client
(``runpod.apps.tasks``) deploys the pod, waits for ``GET /ping``, sends one *function request*
and collects the answer, then terminates the pod:

=================  =========================================================================
``GET /ping``      ``{"ready": true}``; the only route without the token
``POST /execute``  run the request now; the answer is the response
``POST /submit``   start it in the background (409 while one runs); ``{"status": "RUNNING"}``
``GET /result``    ``{"status": "NONE"|"RUNNING"|"DONE", "response": ...}``
``POST /timeout``  ``{"timeout": seconds}``: how long the running call may take; echoed back
=================  =========================================================================

Every route but ``/ping`` needs ``Authorization: Bearer $RUNPOD_TASK_TOKEN``. A request is
``{function_name, function_code, args, kwargs, serialization_format, dependencies,
system_dependencies}``: ``function_code`` is the whole module of the function, run as a module
named ``__runpod_live__`` (so ``if __name__ == "__main__"`` blocks stay inert), and the
function found by name (a handle's ``_fn``). Arguments and the result are base64 cloudpickle,
or plain JSON with ``serialization_format: "json"``. The response is ``{success, result |
json_result, error, stdout}``; a coroutine is awaited and a generator's chunks gathered.
``dependencies`` are pip-installed into a directory of this pod's own; ``system_dependencies``
must already be there (a pod never runs apt here). A pod nobody has contacted for
``RUNPOD_TASK_IDLE_TIMEOUT`` seconds (600) while nothing runs exits by itself.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import inspect
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_REQUEST_BYTES = 64 * 2**20


def _cloudpickle() -> Any:
    try:
        import cloudpickle
    except ImportError:
        raise RuntimeError(
            "cloudpickle is not installed in this task image; the request's arguments and "
            'result need it (or send serialization_format "json")'
        ) from None
    return cloudpickle


def _install(packages: list[str], target: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", target, *packages],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"installing {', '.join(packages)} failed: {done.stderr[-2000:]}")
    if target not in sys.path:
        sys.path.insert(0, target)


def _check_system(packages: list[str]) -> None:
    from .sysdeps import missing_system_packages

    missing = missing_system_packages(packages)
    if missing:
        raise RuntimeError(
            f"system_dependencies {', '.join(missing)} are not in this task image, and task pods "
            "here never install system packages: use an image that has them"
        )


def _source_file(code: str) -> str:
    """The module's source as a real file, so tracebacks and ``inspect`` find its lines."""
    digest = hashlib.sha256(code.encode()).hexdigest()[:16]
    path = os.path.join(tempfile.gettempdir(), f"runpod_task_{digest}.py")
    if not os.path.exists(path):
        with open(path, "w", encoding="utf-8") as out:
            out.write(code)
    return path


def _drive(result: Any) -> Any:
    import asyncio

    if inspect.isawaitable(result):
        return asyncio.run(_awaited(result))
    if inspect.isasyncgen(result):
        return asyncio.run(_gathered(result))
    if inspect.isgenerator(result):
        return list(result)
    return result


async def _awaited(awaitable: Any) -> Any:
    return _drive_sync(await awaitable)


def _drive_sync(result: Any) -> Any:
    return list(result) if inspect.isgenerator(result) else result


async def _gathered(agen: Any) -> list[Any]:
    return [chunk async for chunk in agen]


class _Tee(io.TextIOBase):
    """Prints go to the response's ``stdout`` and to the pod's own log."""

    def __init__(self, captured: io.StringIO) -> None:
        self.captured = captured

    def write(self, text: str) -> int:
        self.captured.write(text)
        with contextlib.suppress(ValueError, OSError):
            sys.__stdout__.write(text)  # type: ignore[union-attr]
            sys.__stdout__.flush()  # type: ignore[union-attr]
        return len(text)


def execute(request: dict[str, Any], deps_dir: str) -> dict[str, Any]:
    """Run one function request; the response (never raises)."""
    captured = io.StringIO()
    try:
        if not isinstance(request, dict):
            raise ValueError("the request must be a JSON object")
        name, code = request.get("function_name"), request.get("function_code")
        if not isinstance(name, str) or not name or not isinstance(code, str) or not code:
            return {"success": False, "error": "function_name and function_code are required"}
        fmt = request.get("serialization_format") or "cloudpickle"
        if fmt not in ("cloudpickle", "json"):
            return {"success": False, "error": f"unknown serialization_format {fmt!r}"}
        if request.get("system_dependencies"):
            _check_system(list(request["system_dependencies"]))
        if request.get("dependencies"):
            _install(list(request["dependencies"]), deps_dir)
        args, kwargs = request.get("args") or [], request.get("kwargs") or {}
        if fmt == "cloudpickle":
            pickle = _cloudpickle()
            args = [pickle.loads(base64.b64decode(a)) for a in args]
            kwargs = {k: pickle.loads(base64.b64decode(v)) for k, v in kwargs.items()}
        path = _source_file(code)
        namespace: dict[str, Any] = {"__name__": "__runpod_live__", "__file__": path}
        with contextlib.redirect_stdout(_Tee(captured)):
            exec(compile(code, path, "exec"), namespace)
            if name not in namespace:
                return {
                    "success": False,
                    "error": f"function {name!r} not found in the request's code",
                    "stdout": captured.getvalue(),
                }
            func = getattr(namespace[name], "_fn", namespace[name])
            result = _drive(func(*args, **kwargs))
        response: dict[str, Any] = {"success": True, "stdout": captured.getvalue()}
        if fmt == "json":
            json.dumps(result)  # a TypeError names what is not JSON
            response["json_result"] = result
        else:
            response["result"] = base64.b64encode(_cloudpickle().dumps(result)).decode()
        return response
    except Exception:
        return {"success": False, "error": traceback.format_exc(), "stdout": captured.getvalue()}


class Runner:
    """The pod's one job slot and its last contact."""

    def __init__(self, token: str, idle_timeout: float) -> None:
        self.token = token.encode()
        self.idle_timeout = idle_timeout
        self.lock = threading.Lock()
        self.status = "NONE"
        self.response: dict[str, Any] | None = None
        self.timeout: float | None = None
        self.inline = 0
        self.last_contact = time.monotonic()
        self.deps_dir = tempfile.mkdtemp(prefix="runpod-task-deps-")

    def authorized(self, header: str | None) -> bool:
        given = (header or "").encode()
        ok = bool(self.token) and hmac.compare_digest(given, b"Bearer " + self.token)
        if ok:
            self.last_contact = time.monotonic()
        return ok

    def abandoned(self) -> bool:
        busy = self.status == "RUNNING" or self.inline > 0
        return not busy and time.monotonic() - self.last_contact > self.idle_timeout


def _handler(runner: Runner) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST_BYTES:
                raise ValueError(f"the request is over {MAX_REQUEST_BYTES // 2**20} MB")
            return json.loads(self.rfile.read(length) or b"{}")

        def do_GET(self) -> None:
            if self.path == "/ping":
                self._send(200, {"ready": True})
            elif not runner.authorized(self.headers.get("Authorization")):
                self._send(401, {"error": "unauthorized"})
            elif self.path == "/result":
                with runner.lock:
                    self._send(200, {"status": runner.status, "response": runner.response})
            else:
                self._send(404, {"error": f"no route GET {self.path}"})

        def do_POST(self) -> None:
            if not runner.authorized(self.headers.get("Authorization")):
                self._send(401, {"error": "unauthorized"})
                return
            try:
                request = self._body()
            except (ValueError, json.JSONDecodeError) as err:
                self._send(400, {"error": f"the request body is not a JSON object: {err}"})
                return
            if self.path == "/timeout":
                value = request.get("timeout") if isinstance(request, dict) else None
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                    self._send(400, {"error": "timeout must be a non-negative number of seconds"})
                    return
                runner.timeout = float(value)
                self._send(200, {"timeout": value})
            elif self.path == "/execute":
                with runner.lock:
                    runner.inline += 1
                try:
                    self._send(200, execute(request, runner.deps_dir))
                finally:
                    with runner.lock:
                        runner.inline -= 1
            elif self.path == "/submit":
                with runner.lock:
                    if runner.status == "RUNNING":
                        self._send(409, {"error": "a job is already running"})
                        return
                    runner.status, runner.response = "RUNNING", None
                    if isinstance(request, dict) and isinstance(
                        request.get("timeout"), (int, float)
                    ):
                        runner.timeout = float(request["timeout"])

                def run() -> None:
                    response = execute(request, runner.deps_dir)
                    with runner.lock:
                        runner.status, runner.response = "DONE", response

                threading.Thread(target=run, name="task", daemon=True).start()
                ack: dict[str, Any] = {"status": "RUNNING"}
                if isinstance(request, dict) and "timeout" in request:
                    ack["timeout"] = request["timeout"]
                self._send(200, ack)
            else:
                self._send(404, {"error": f"no route POST {self.path}"})

        def log_message(self, format: str, *args: Any) -> None:
            """Requests are not logged: the pod's log is the function's output."""

    return Handler


def main() -> int:
    token = os.environ.get("RUNPOD_TASK_TOKEN", "")
    if not token:
        print("task runner: RUNPOD_TASK_TOKEN is not set", file=sys.stderr)
        return 1
    port = int(os.environ.get("RUNPOD_TASK_PORT") or 8080)
    host = os.environ.get("FLASH_HOST") or "0.0.0.0"
    runner = Runner(token, float(os.environ.get("RUNPOD_TASK_IDLE_TIMEOUT") or 600))
    server = ThreadingHTTPServer((host, port), _handler(runner))
    server.daemon_threads = True

    def watchdog() -> None:
        while not runner.abandoned():
            time.sleep(min(15.0, runner.idle_timeout / 4 or 1))
        print("task runner: nobody came back for the result; exiting", file=sys.stderr)
        server.shutdown()

    threading.Thread(target=watchdog, name="watchdog", daemon=True).start()
    print(f"task runner listening on {host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
