"""The platform as a background process: one per ``FLASH_HOME``, found through a lock file.

The running platform holds an exclusive ``flock`` on ``platform.lock`` for its whole life and
records ``{"pid", "url"}`` in ``server.json``; the lock (not the pid file) says whether it runs,
so a crashed platform never looks alive. ``start`` runs ``python -m flash_runtime.platform.server``
detached and waits for ``/health``; ``stop`` sends SIGTERM (workers finish in-flight work) and
waits for the lock to be released and then for the process to be gone (what it does after the
lock, such as SQLite removing its write-ahead log at the last close, is done when stop returns).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from ..errors import FlashError
from ..protocol.local import PlatformConfig
from ..protocol.wire import bearer

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 60.0


class PlatformRunning(FlashError):
    """Another platform already runs on this ``FLASH_HOME``."""


# Platforms this process started, by pid (see start).
_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def _lock_path(config: PlatformConfig) -> Path:
    return config.root / "platform.lock"


def _info_path(config: PlatformConfig) -> Path:
    return config.root / "server.json"


def log_path(config: PlatformConfig) -> Path:
    """Where a background platform writes its own log."""
    return config.logs_dir / "platform.log"


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname or '127.0.0.1'}:{port}"))


@contextlib.contextmanager
def instance_lock(config: PlatformConfig) -> Iterator[None]:
    """Be the one platform of this ``FLASH_HOME`` while the block runs."""
    config.root.mkdir(parents=True, exist_ok=True)
    lock: IO[str] = open(_lock_path(config), "a+")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = running(config) or {}
            raise PlatformRunning(
                f"the platform already runs (pid {info.get('pid', '?')}, "
                f"{info.get('url', '?')}); `flash platform stop` stops it"
            ) from None
        info_path = _info_path(config)
        tmp = info_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({"pid": os.getpid(), "url": config.url}))
        tmp.replace(info_path)
        config.pid_file.write_text(f"{os.getpid()}\n")
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                config.pid_file.unlink()
            with contextlib.suppress(OSError):
                info_path.unlink()
    finally:
        lock.close()


def running(config: PlatformConfig) -> dict[str, Any] | None:
    """``{"pid", "url"}`` of the platform running on this home, or None."""
    lock_file = _lock_path(config)
    if not lock_file.exists():
        return None
    with open(lock_file, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: it runs
        else:
            fcntl.flock(lock, fcntl.LOCK_UN)
            return None
    try:
        info: dict[str, Any] = orjson.loads(_info_path(config).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        info = {}
    return info


def healthy(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The platform's ``/health`` at ``url``, or None when nothing answers."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:
            body: dict[str, Any] = orjson.loads(resp.read())
            return body
    except (OSError, ValueError):
        return None


def start(config: PlatformConfig, *, port: int | None = None) -> dict[str, Any]:
    """Start the platform in the background; returns ``{"pid", "url"}`` once it answers."""
    info = running(config)
    if info is not None:
        raise PlatformRunning(
            f"the platform already runs (pid {info.get('pid')}, {info.get('url')}); "
            "`flash platform stop` stops it"
        )
    url = with_port(config.url, port) if port else config.url
    log_file_path = log_path(config)
    log_file_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = dict(os.environ, FLASH_HOME=str(config.home), FLASH_PLATFORM_URL=url)
    fd = os.open(log_file_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with open(fd, "ab") as log_file:
        offset = log_file.tell()
        proc = subprocess.Popen(
            [sys.executable, "-m", "flash_runtime.platform.server"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the command that started it
            cwd=config.root,
        )
    # The platform outlives this process. Keep its Popen for as long as this process lives, so
    # that it is reaped when it exits here (a test's platform) and never dropped while running.
    _STARTED[proc.pid] = proc
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        code = proc.poll()
        if code is not None:
            raise FlashError(
                f"the platform exited with code {code} while starting:\n"
                f"{_read_from(log_file_path, offset)}\n(log: {log_file_path})"
            )
        health = healthy(url, timeout=1.0)
        if health is not None and health.get("pid") == proc.pid:
            return {"pid": proc.pid, "url": url}
        time.sleep(0.1)
    proc.terminate()
    raise FlashError(
        f"the platform did not answer at {url} within {START_TIMEOUT_S:.0f}s (log: {log_file_path})"
    )


def _read_from(path: Path, offset: int, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    return data[-limit:].decode(errors="replace").strip()


def stop(config: PlatformConfig, timeout: float = STOP_TIMEOUT_S) -> int | None:
    """SIGTERM the running platform and wait for it to exit; returns its pid (None if it was
    not running). Past ``timeout`` it is killed."""
    info = running(config)
    if info is None:
        return None
    pid = int(info.get("pid") or 0)
    if pid <= 0:
        raise FlashError(f"the platform runs but {_info_path(config)} has no pid")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running(config) is None:
            _reap(pid)
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.02)
            return pid
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    _reap(pid)
    return pid


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie that its parent has not reaped yet has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _reap(pid: int) -> None:
    proc = _STARTED.pop(pid, None)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(STOP_TIMEOUT_S)


def ensure_running(config: PlatformConfig) -> None:
    """Start the platform unless it runs (what ``flash deploy`` calls first).

    Raises FlashError when a platform runs on this home at another URL than ``config.url``
    (the caller would talk to the wrong address).
    """
    info = running(config)
    if info is None:
        start(config)
        return
    if info.get("url") and info["url"] != config.url:
        raise FlashError(
            f"the platform of {config.home} runs at {info['url']}, not at {config.url}: set "
            f"FLASH_PLATFORM_URL={info['url']} or restart it with `flash platform stop` and "
            "`flash platform start`"
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while healthy(config.url) is None:  # started a moment ago by someone else
        if time.monotonic() > deadline:
            raise FlashError(
                f"the platform (pid {info.get('pid')}) does not answer at {config.url}"
            )
        time.sleep(0.1)


def fetch_status(config: PlatformConfig, url: str, timeout: float = 5.0) -> dict[str, Any]:
    """The running platform's endpoints and workers (``GET /platform/status``)."""
    request = urllib.request.Request(f"{url}/platform/status", headers=bearer(config.api_key))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            body: dict[str, Any] = orjson.loads(resp.read())
            return body
    except urllib.error.HTTPError as err:
        raise FlashError(f"the platform at {url} answered {err.code} to /platform/status") from err
    except OSError as err:
        raise FlashError(f"the platform at {url} does not answer: {err}") from err
