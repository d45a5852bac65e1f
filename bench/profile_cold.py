"""Where a load-balanced cold start spends its time: ours against bare uvicorn + Starlette.

    .venv/bin/python -m bench.profile_cold [--runs 30] [--rate 1000]

Builds the template with our packer, extracts it once, then starts ``--runs`` workers of each
(ours with ``FLASH_DISABLE_UNPACK=1``, so extraction is left out; the cold-start benchmark
shows it costs nothing measurable for the template) under ``py-spy record --nonblocking`` until
their first 200 from ``POST /process``, and prints the samples per run (1 ms each at 1000 Hz,
all threads) grouped by phase. ``--nonblocking`` matters: py-spy's default mode stops the
process for every sample and makes a 0.13 s start take seconds. Needs py-spy
(``pip install py-spy``). Raw samples stay in the work directory with ``--keep``.
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import apps, pack_bench
from .common import BENCH, CACHE, PYTHON, UVICORN_FLAGS, free_port, server_env
from .reference import ensure_venv

PY_SPY = (
    str(Path(sys.executable).parent / "py-spy")
    if (Path(sys.executable).parent / "py-spy").is_file()
    else (shutil.which("py-spy") or "py-spy")
)

# (label, substrings that must all be in the stack); the first match wins.
OURS = [
    ("loading thread: import the user's module", ("LBWorker._load", "load_resource")),
    ("loading thread: read the manifest", ("LBWorker._load", "unpack")),
    ("loading thread: build the router", ("LBWorker._load", "for_resource")),
    ("loading thread: import worker.router (starlette, msgspec)", ("LBWorker._load", "router.py")),
    ("loading thread: other", ("LBWorker._load",)),
    ("main: import uvicorn", ("LBWorker.run", "uvicorn/__init__.py")),
    ("main: uvicorn Server.run (loop, first requests)", ("LBWorker.run", "Server.run")),
    ("main: LBWorker.run, other", ("LBWorker.run",)),
    ("main: import worker.bootstrap (manifest, msgspec)", ("worker/bootstrap.py", "<module>")),
    ("interpreter start-up (site, encodings)", ("<module> (",)),
]
BARE = [
    ("import uvicorn", ("uvicorn/__init__.py",)),
    ("import the app (starlette, orjson)", ("import_from_string",)),
    ("uvicorn Server.run (loop, first requests)", ("Server.run",)),
    ("uvicorn main, other", ("uvicorn/main.py",)),
    ("interpreter start-up (site, encodings)", ("<module> (",)),
]


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def _profile_once(cmd: list[str], env: dict[str, str], port: int, out: Path, rate: int) -> float:
    record = ["record", "--nonblocking", "--full-filenames", "--threads", "-r", str(rate)]
    spy = subprocess.Popen(
        [PY_SPY, *record, "-f", "raw", "-o", str(out), "--", *cmd],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    started = time.time()
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request(
                "POST", "/process", b'{"input_data": {}}', {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            response.read()
            conn.close()
            if response.status == 200:
                break
        except OSError:
            pass
        if spy.poll() is not None:
            raise RuntimeError(f"{cmd}: exited before answering")
        time.sleep(0.002)
    ready = time.time() - started
    for child in _children(spy.pid):  # the worker: py-spy's only child
        os.kill(child, signal.SIGKILL)  # its shutdown is not sampled
    spy.wait(30)
    return ready


def _buckets(paths: list[Path], groups: list[tuple[str, tuple[str, ...]]]) -> dict[str, float]:
    out: collections.Counter[str] = collections.Counter()
    for path in paths:
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            label = next((g for g, needles in groups if all(n in stack for n in needles)), "other")
            out[label] += int(count)
    return {label: n / len(paths) for label, n in out.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    if not Path(PY_SPY).is_file():
        sys.exit("py-spy is not installed: .venv/bin/pip install py-spy")
    ref = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="profile-cold-"))
    try:
        template = apps.init_template(ref, work)
        env = pack_bench._cache_env(CACHE / "pack-warm")
        artifact = apps.build_quietly("ours", template, env, ref, work / "template.tar.gz")
        app_dir = work / "app"
        app_dir.mkdir()
        subprocess.run(["tar", "xzf", str(artifact), "-C", str(app_dir)], check=True)
        for kind, groups in (("ours", OURS), ("bare", BARE)):
            paths, ready = [], []
            for i in range(args.runs):
                port = free_port()
                if kind == "ours":
                    cmd = [PYTHON, "-m", "flash_runtime.bootstrap"]
                    run_env = server_env(
                        {
                            "FLASH_DISABLE_UNPACK": "1",
                            "FLASH_APP_DIR": str(app_dir),
                            "FLASH_RESOURCE_NAME": "lb_worker",
                            "FLASH_ENDPOINT_TYPE": "lb",
                            "FLASH_HOST": "127.0.0.1",
                            "PORT": str(port),
                            "FLASH_LOG_LEVEL": "WARNING",
                        }
                    )
                else:
                    cmd = [
                        PYTHON, "-m", "uvicorn", "bare_starlette_app:app", "--app-dir", str(BENCH),
                        "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS,
                    ]  # fmt: skip
                    run_env = server_env()
                out = work / f"{kind}-{i}.txt"
                ready.append(_profile_once(cmd, run_env, port, out, args.rate))
                paths.append(out)
            ms = 1000 / args.rate
            median = sorted(ready)[len(ready) // 2]
            print(f"\n{kind}: first 200 after {median * 1000:.0f} ms (median, under py-spy)")
            for label, samples in _buckets(paths, groups).items():
                print(f"  {samples * ms:6.1f} ms  {label}")
    finally:
        if args.keep:
            print(f"raw samples kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
