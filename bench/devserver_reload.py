"""``flash run`` live reload: the time from saving a file to the new code answering.

Runs ``flash run`` (a subprocess, its own local platform in a temporary ``FLASH_HOME``) on a copy
of ``tests/apps/dev_app``, warms both endpoints (a worker running each, as while developing),
then, ``--edits`` times per endpoint: writes a new ``VERSION`` into the endpoint's file and
calls it through the development server every 10 ms until the answer carries the new version.
The figure is the time from just before the write to that answer, as a client sees it; the
development server's own "new code serving, N s after the save" line (its clock starts at the
file's mtime, and it waits for the old workers to be gone) is reported beside it.

    .venv/bin/python bench/devserver_reload.py [--edits 10] [--json out.json]
"""

from __future__ import annotations

import argparse
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
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "tests" / "apps" / "dev_app"
POLL_S = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def lb_version(base: str) -> str:
    return str(post(f"{base}/lb_worker/process", {"text": "x"})["version"])


def qb_version(base: str) -> str:
    return str(post(f"{base}/gpu_worker/runsync", {"input": {"message": "x"}})["output"]["version"])


def measure(path: Path, current: str, new: str, probe: Any, base: str) -> float:
    text = path.read_text()
    started = time.perf_counter()
    path.write_text(text.replace(f'VERSION = "{current}"', f'VERSION = "{new}"'))
    deadline = started + 60
    while time.perf_counter() < deadline:
        try:
            if probe(base) == new:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(POLL_S)
    raise RuntimeError(f"{path.name}: version {new} not served after 60 s")


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(values),
        "min": round(ordered[0], 3),
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[max(0, int(len(ordered) * 0.9) - 1)], 3),
        "max": round(ordered[-1], 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=10, help="edits per endpoint")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="flash-reload-bench-"))
    project = tmp / "reload_app"
    shutil.copytree(APP, project, ignore=shutil.ignore_patterns(".flash", "__pycache__"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    env.update(
        FLASH_HOME=str(tmp / "home"),
        FLASH_PLATFORM_URL=f"http://127.0.0.1:{free_port()}",
        PYTHONUNBUFFERED="1",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    flash = [sys.executable, "-c", "from flash_runtime.cli import main; main()"]
    proc = subprocess.Popen(
        [*flash, "run", "--port", str(port)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 60
        while not any("watching for changes" in line for line in lines):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flash run did not start:\n" + "\n".join(lines))
            time.sleep(0.05)
        lb_version(base)  # warm: one worker of each endpoint running
        qb_version(base)
        results: dict[str, list[float]] = {"lb": [], "qb": []}
        for i in range(args.edits):
            for kind, name, probe in (
                ("lb", "lb_worker.py", lb_version),
                ("qb", "gpu_worker.py", qb_version),
            ):
                seconds = measure(project / name, f"v{i + 1}", f"v{i + 2}", probe, base)
                results[kind].append(seconds)
                time.sleep(1.0)  # let the roll finish (old workers drained) before the next edit
        reported = [
            float(m.group(1))
            for line in lines
            if (m := re.search(r"new code serving, ([\d.]+)s after the save", line))
        ]
        steps = [
            (float(m.group(1)), float(m.group(2)))
            for line in lines
            if (m := re.search(r"built in ([\d.]+)s, released build \w+ in ([\d.]+)s", line))
        ]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([*flash, "platform", "stop"], env=env, capture_output=True, check=False)
        shutil.rmtree(tmp, ignore_errors=True)

    figures = {
        "save_to_new_code_answering_s": {
            "load-balanced route": summary(results["lb"]),
            "queue function (runsync)": summary(results["qb"]),
        },
        "flash_run_reported_serving_s": summary(reported) if reported else None,
        "build_s": summary([b for b, _ in steps]) if steps else None,
        "release_s": summary([r for _, r in steps]) if steps else None,
        "raw": {k: [round(v, 3) for v in vs] for k, vs in results.items()},
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
