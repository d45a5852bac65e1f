"""Load-balanced worker benchmark: cold start and JSON-echo throughput against bare Starlette.

    python bench/lb_bench.py [--duration 10] [--connections 32] [--cold-runs 7]

* **Cold start**: process start → first 200 from ``POST /process``, for
  - ``flash``: ``python -m flash_runtime.bootstrap`` on the ``tests/apps/lb_echo`` artifact,
    extracting it into a fresh directory each run (what a new worker does);
  - ``flash-extracted``: the same with ``FLASH_DISABLE_UNPACK=1`` on an extracted copy;
  - ``bare``: ``python -m uvicorn`` serving ``bench/bare_starlette_app.py``.
* **Throughput**: ``wrk -t1 -cN -dS --latency`` with ``bench/post_process.lua`` against one
  worker of each, alternating, after a warm-up.

Both servers run uvicorn with the same settings (uvloop, httptools, no access log, no proxy
headers, no server header, lifespan and websockets off), so the comparison is the app alone.
Needs ``wrk`` on PATH for the throughput part. Results are printed and written as JSON
(``--out``, default ``bench/results/lb_bench.json``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
APP = ROOT / "tests" / "apps" / "lb_echo"
BODY = (
    b'{"input_data": {"prompt": "Summarise the plot of Hamlet in one sentence.", '
    b'"max_tokens": 64, "temperature": 0.7, "stop": ["\\n"]}}'
)
UVICORN_FLAGS = [
    "--no-access-log",
    "--log-level=warning",
    "--no-proxy-headers",
    "--no-server-header",
    "--lifespan=off",
    "--ws=none",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build_artifact(workdir: Path) -> Path:
    from flash_runtime.pack import build

    project = workdir / "lb_echo"
    shutil.copytree(APP, project, ignore=shutil.ignore_patterns(".flash", "__pycache__"))
    return Path(build(project, skip_deps=True).artifact)


PYCACHE = Path(tempfile.gettempdir()) / "lb-bench-pycache"


def clean_env() -> dict[str, str]:
    """The servers' environment: no FLASH_/RUNPOD_ settings, and one shared bytecode cache.

    Bytecode goes to a private cache (``PYTHONPYCACHEPREFIX``) that a warm-up run fills, so
    both servers start with compiled libraries, as in a built image, whatever the caller's
    ``PYTHONDONTWRITEBYTECODE``. A fresh worker's user modules still compile on every run,
    since each run extracts into a new directory.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def flash_command(
    artifact: Path, app_dir: Path, port: int, unpack: bool
) -> tuple[list[str], dict[str, str]]:
    env = clean_env()
    env.update(
        FLASH_BUILD_ARTIFACT_PATH=str(artifact),
        FLASH_APP_DIR=str(app_dir),
        FLASH_RESOURCE_NAME="lb_echo",
        FLASH_ENDPOINT_TYPE="lb",
        FLASH_HOST="127.0.0.1",
        PORT=str(port),
        FLASH_LOG_LEVEL="WARNING",
    )
    if not unpack:
        env["FLASH_DISABLE_UNPACK"] = "1"
    return [sys.executable, "-m", "flash_runtime.bootstrap"], env


def bare_command(port: int) -> tuple[list[str], dict[str, str]]:
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "bare_starlette_app:app",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *UVICORN_FLAGS,
    ]
    return cmd, clean_env()


def first_200(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Block until ``POST /process`` answers 200 (retrying refused connections and 503s)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("POST", "/process", BODY, {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.001)
    raise TimeoutError("no 200 from /process")


def start(command: tuple[list[str], dict[str, str]]) -> subprocess.Popen[bytes]:
    cmd, env = command
    return subprocess.Popen(
        cmd, env=env, cwd=BENCH, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cold_start(make: Callable[[int], tuple[list[str], dict[str, str]]]) -> float:
    port = free_port()
    command = make(port)
    started = time.perf_counter()
    proc = start(command)
    try:
        first_200(port, proc)
        return time.perf_counter() - started
    finally:
        stop(proc)


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"no {pattern!r} in wrk's output:\n{text}")
    return match.group(1)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(port: int, duration: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(BENCH / "post_process.lua"),
            f"http://127.0.0.1:{port}/process",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(_find(r"Requests/sec:\s+([\d.]+)", out))
    p50 = _ms(_find(r"\s50%\s+(\S+)", out))
    p99 = _ms(_find(r"\s99%\s+(\S+)", out))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": rps,
        "p50_ms": p50,
        "p99_ms": p99,
        "non_2xx": float(errors.group(1)) if errors else 0.0,
    }


def throughput(
    make: Callable[[int], tuple[list[str], dict[str, str]]], duration: int, connections: int
) -> dict[str, float]:
    port = free_port()
    proc = start(make(port))
    try:
        first_200(port, proc)
        wrk(port, 2, connections)  # warm-up
        return wrk(port, duration, connections)
    finally:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per server")
    parser.add_argument("--cold-runs", type=int, default=7)
    parser.add_argument("--out", type=Path, default=BENCH / "results" / "lb_bench.json")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()

    results: dict[str, Any] = {"python": sys.version.split()[0], "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="lb-bench-") as tmp:
        work = Path(tmp)
        os.environ.setdefault("FLASH_HOME", str(work / "flash_home"))
        artifact = build_artifact(work)
        extracted = work / "extracted"
        cold_start(lambda port: flash_command(artifact, extracted, port, unpack=True))
        cold_start(bare_command)  # fills the bytecode cache for both

        servers: dict[str, Callable[[int], tuple[list[str], dict[str, str]]]] = {
            "bare": bare_command,
            "flash-extracted": lambda port: flash_command(artifact, extracted, port, unpack=False),
            "flash": lambda port: flash_command(
                artifact, work / f"app-{time.monotonic_ns()}", port, unpack=True
            ),
        }
        cold: dict[str, list[float]] = {name: [] for name in servers}
        for _ in range(args.cold_runs):  # interleaved, so drift affects every server alike
            for name, make in servers.items():
                cold[name].append(cold_start(make))
        results["cold_start_s"] = {
            name: {"median": statistics.median(t), "min": min(t), "runs": t}
            for name, t in cold.items()
        }
        print(f"cold start (process start -> first 200 from POST /process), {args.cold_runs} runs:")
        for name, t in cold.items():
            print(
                f"  {name:16} median {statistics.median(t) * 1000:7.1f} ms   min {min(t) * 1000:7.1f} ms"
            )
        bare_median = statistics.median(cold["bare"])
        for name in ("flash", "flash-extracted"):
            print(f"  {name} / bare: {statistics.median(cold[name]) / bare_median:.2f}x")

        if not args.skip_throughput and shutil.which("wrk"):
            rows: dict[str, list[dict[str, float]]] = {"bare": [], "flash": []}
            makers = {"bare": bare_command, "flash": servers["flash-extracted"]}
            for _ in range(args.rounds):
                for name, make in makers.items():
                    rows[name].append(throughput(make, args.duration, args.connections))
            results["throughput"] = {
                "wrk": f"wrk -t1 -c{args.connections} -d{args.duration}s --latency -s bench/post_process.lua",
                **rows,
            }
            print(f"\nJSON echo, wrk -t1 -c{args.connections} -d{args.duration}s (one worker):")
            for name, samples in rows.items():
                for r in samples:
                    print(
                        f"  {name:6} {r['requests_per_s']:9.0f} req/s   p50 {r['p50_ms']:6.2f} ms   "
                        f"p99 {r['p99_ms']:6.2f} ms   non-2xx {r['non_2xx']:.0f}"
                    )
            ratio = statistics.median(
                r["requests_per_s"] for r in rows["flash"]
            ) / statistics.median(r["requests_per_s"] for r in rows["bare"])
            results["throughput"]["flash_over_bare"] = ratio
            print(f"  flash / bare throughput: {ratio:.2f}x")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
