"""What every benchmark shares: paths, the servers' environment, processes, ports, statistics."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
APPS = BENCH / "apps"
RESULTS = BENCH / "results"
# Everything kept between runs (the reference's virtual environment, package caches, bytecode).
CACHE = Path(os.environ.get("FLASH_BENCH_CACHE") or BENCH / ".cache")
PYTHON = sys.executable  # our side: the project's virtual environment
FLASH_CLI = str(Path(sys.executable).parent / "flash")

# The same uvicorn settings for every load-balanced server; our worker sets exactly these
# itself (flash_runtime/worker/lb.py), the others get them on the command line.
UVICORN_FLAGS = (
    "--no-access-log",
    "--log-level=warning",
    "--no-proxy-headers",
    "--no-server-header",
    "--lifespan=off",
    "--ws=none",
)
# The body of every POST /process (bench/post_process.lua sends the same bytes).
PROCESS_BODY = (
    b'{"input_data": {"prompt": "Summarise the plot of Hamlet in one sentence.", '
    b'"max_tokens": 64, "temperature": 0.7, "stop": ["\\n"]}}'
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def server_env(
    extra: Mapping[str, str] | None = None, *, bytecode_cache: bool = True
) -> dict[str, str]:
    """A server's environment: no FLASH_/RUNPOD_ settings of the caller, one bytecode cache.

    Bytecode goes to a private cache (``PYTHONPYCACHEPREFIX``) that a discarded warm-up run
    fills, so every server starts with its libraries compiled, as in a built image, whatever the
    caller's ``PYTHONDONTWRITEBYTECODE``. Code extracted from an artifact into a new directory
    still compiles on every run, as it does in a fresh worker. ``bytecode_cache=False`` leaves
    the cache out: then bytecode an artifact ships is used, as on Runpod (a cache prefix makes
    Python ignore every ``__pycache__``), and libraries use their environments' own.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    for key in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(key, None)
    if bytecode_cache:
        env["PYTHONPYCACHEPREFIX"] = str(CACHE / "pycache")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class Proc:
    """A server or worker process we started, with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started: float  # time.time() just before the process was created
    port: int | None = None

    def log(self, tail: int = 40) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.popen.returncode}; its log ends:\n{self.log()}"
            )

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds (at once when it is 0); then SIGKILL
        to whatever is left of its process group (the official ``runpod`` loop pings from a
        child process of its own, which would outlive a killed parent and run on through the
        next measurements)."""
        if self.popen.poll() is None and timeout <= 0:
            self.popen.kill()
            self.popen.wait()
        elif self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)


def spawn(
    name: str,
    cmd: Sequence[str],
    env: Mapping[str, str],
    logs: Path,
    *,
    cwd: Path | None = None,
    port: int | None = None,
) -> Proc:
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{name}-{time.monotonic_ns()}.log"
    with open(log_path, "wb") as log_file:
        started = time.time()
        popen = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd or BENCH,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a process group of its own, for Proc.stop
        )
    return Proc(name, popen, log_path, started, port)


def post_process(port: int, timeout: float = 5, path: str = "/process") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, PROCESS_BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_first_200(proc: Proc, timeout: float = 120, path: str = "/process") -> float:
    """Poll ``POST path`` until it answers 200; returns time.time() of that answer.

    Refused connections and 503s (a worker still loading) are retried every millisecond.
    """
    assert proc.port is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            status, _ = post_process(proc.port, timeout=max(5.0, timeout), path=path)
            if status == 200:
                return time.time()
        except OSError:
            pass
        time.sleep(0.001)
    raise TimeoutError(f"{proc.name}: no 200 from POST {path} in {timeout}s:\n{proc.log()}")


# -- statistics ------------------------------------------------------------------------------


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, spread (min, max, quartiles) and the runs themselves."""
    ordered = sorted(values)
    if not ordered:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "runs": []}
    if len(ordered) >= 4:
        q1, _, q3 = statistics.quantiles(ordered, n=4)
    else:
        q1, q3 = ordered[0], ordered[-1]
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
        "runs": list(values),
    }


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Per-run-pair ratios (run i over run i) and their summary."""
    return summary([a / b for a, b in zip(numerators, denominators, strict=True) if b])


@dataclass
class Section:
    """One benchmark's results: JSON-able figures plus the rows of the printed table."""

    name: str
    data: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    handoff: dict[str, Any] = field(default_factory=dict)  # for later sections, not reported

    def row(
        self,
        what: str,
        unit: str,
        ours: dict[str, Any],
        other_label: str,
        other: dict[str, Any],
        ratio_label: str,
        ratio: dict[str, Any],
        goals: Sequence[dict[str, Any]] = (),
    ) -> None:
        """One comparison of the table: ours, the other side, their per-run ratio, goals."""
        self.rows.append(
            {
                "section": self.name,
                "what": what,
                "unit": unit,
                "ours": ours,
                "other_label": other_label,
                "other": other,
                "ratio_label": ratio_label,
                "ratio": ratio,
                "goals": [dict(g, met=goal_met(g, ours, ratio)) for g in goals],
            }
        )


def goal(op: str, value: float, on: str, text: str) -> dict[str, Any]:
    """A goal on the median of ``on`` ("ratio" or "ours"): ``op`` is ">=" or "<="."""
    return {"op": op, "value": value, "on": on, "text": text}


def goal_met(
    g: Mapping[str, Any], ours: Mapping[str, Any], ratio: Mapping[str, Any]
) -> bool | None:
    figure = (ratio if g["on"] == "ratio" else ours).get("median")
    if figure is None:
        return None
    return bool(figure >= g["value"] if g["op"] == ">=" else figure <= g["value"])


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
