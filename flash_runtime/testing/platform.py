"""A platform running inside the calling process, on its own thread, for tests and benchmarks.

It is the real server (routes, runtime, real worker processes), only not daemonised, so a test
can apply ``EndpointSpec``s directly (as the control plane does) and look at the runtime::

    with InProcessPlatform(home) as platform:
        url = platform.apply(spec)
        ...
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from ..platform import reporting
from ..platform.model import EndpointSpec
from ..platform.runtime import PlatformRuntime
from ..platform.server import PlatformServer, bind, build_app, uvicorn_config
from ..platform.settings import RuntimeSettings
from ..protocol.local import PlatformConfig

T = TypeVar("T")

# Timings short enough for tests: leases lapse after 3 s, held polls answer within 5 s; workers
# in this environment (tests of image environments replace worker_env).
FAST = RuntimeSettings(
    worker_env="platform",
    long_poll_s=5.0,
    ping_interval_ms=1000,
    tick_s=0.1,
    lb_ready_wait_s=20.0,
    shutdown_grace_s=5.0,
    drain_grace_s=10.0,
    backoff_max_s=2.0,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class InProcessPlatform:
    """The platform server on a background thread, on a free loopback port."""

    def __init__(
        self,
        home: Path,
        settings: RuntimeSettings = FAST,
        *,
        api_key: str | None = None,
        port: int | None = None,
    ) -> None:
        self.config = PlatformConfig(
            home=home,
            url=f"http://127.0.0.1:{port or _free_port()}",
            api_key=api_key or "fl_test_" + secrets.token_urlsafe(12),
        )
        self.settings = settings
        self.runtime: PlatformRuntime | None = None
        self.server: PlatformServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return self.config.url

    def start(self, timeout: float = 30.0) -> InProcessPlatform:
        """Start serving; returns once the server answers."""
        sock = bind(self.config)
        self.loop = asyncio.new_event_loop()

        def main() -> None:
            assert self.loop is not None
            asyncio.set_event_loop(self.loop)
            try:
                self.runtime = PlatformRuntime(self.config, self.settings)
                self.server = PlatformServer(
                    uvicorn_config(build_app(self.config, self.runtime)), self.runtime
                )
                self.loop.run_until_complete(self.server.serve(sockets=[sock]))
            except BaseException as err:  # reported by start() / stop()
                self._error = err
            finally:
                sock.close()
                if self.runtime is not None:
                    self.runtime.close_db()

        self._thread = threading.Thread(target=main, name="flash-platform", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not (self.server is not None and self.server.started):
            if self._error is not None or not self._thread.is_alive():
                raise RuntimeError(f"the platform did not start: {self._error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError("the platform did not start in time")
            time.sleep(0.02)
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run ``coro`` on the platform's event loop and return its result."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def apply(self, spec: EndpointSpec) -> str:
        """``Runtime.apply`` (what the control plane calls); returns the endpoint's URL."""
        assert self.runtime is not None
        return self.call(self.runtime.apply(spec))

    def remove(self, endpoint_id: str) -> None:
        assert self.runtime is not None
        self.call(self.runtime.remove(endpoint_id))

    def status(self) -> dict[str, Any]:
        assert self.runtime is not None

        async def status() -> dict[str, Any]:
            assert self.runtime is not None
            return reporting.status(self.runtime)

        return self.call(status())

    def stop(self, timeout: float = 60.0) -> None:
        """Drain the workers and stop the server, as on SIGTERM."""
        if self._thread is None:
            return
        if self.server is not None and self._thread.is_alive():
            self.call(self.server.drain(), timeout)
        self._thread.join(timeout)
        self._thread = None
        if self.loop is not None:
            self.loop.close()

    def __enter__(self) -> InProcessPlatform:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
