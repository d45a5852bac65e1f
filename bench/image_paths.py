"""Cold start of the ``flash init`` template through the three ways a worker starts.

``python -m bench.image_paths [--runs N]`` (the container path needs the images that
``bash scripts/test-images`` builds; it is left out, with a note, when they are missing):

* **direct**: ``python -m flash_runtime.bootstrap`` (our images' command, and the local
  platform's), artifact extracted into a new directory each run;
* **official image path**: the artifact built for Runpod's images, started as those images start
  it (``flash_runtime/platform/official_image/``: ``uvicorn lb_handler:app`` / ``python handler.py`` in an
  environment with their package set); their entry extracts it with ``tarfile`` and loads
  ``handler_<resource>.py``, which hands over to our worker;
* **our image, in a container**: ``docker run`` of ``flash-cpu-test:py3.11`` (host network, the
  artifact mounted at ``/root/.runpod/artifact.tar.gz``), measured from ``docker run``.

Each run measures process start to the first 200 from ``POST /process`` (``lb_worker``) or to
the job server receiving the first job's result (``cpu_worker``, the job queued first). A first
round is discarded (it fills the bytecode caches). Prints medians [min-max] and writes
``bench/results/image_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from flash_runtime.testing.official import OfficialImage, environment

from .common import (
    PYTHON,
    RESULTS,
    Proc,
    free_port,
    server_env,
    spawn,
    summary,
    wait_first_200,
)
from .queue_bench import JobServerProc

IMAGE = "flash-cpu-test:py3.11"
QB_INPUT = {"input_data": {"text": "to be or not to be"}}


def _build(work: Path, repository: str | None) -> Path:
    from flash_runtime.pack import build
    from flash_runtime.pack.scaffold import init_project

    project = init_project(work / ("ours" if repository else "official") / "hello")
    return build(project, image_repository=repository).artifact


def _docker(name: str, artifact: Path, env: dict[str, str], logs: Path) -> Proc:
    cmd = ["docker", "run", "--rm", "--name", name, "--network", "host"]
    cmd += ["-v", f"{artifact}:/root/.runpod/artifact.tar.gz:ro"]
    for key, value in env.items():
        cmd += ["-e", f"{key}={value}"]
    proc = spawn(name, [*cmd, IMAGE], server_env(), logs)
    stop = proc.stop

    def stop_container(timeout: float = 15) -> None:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        stop(timeout)

    proc.stop = stop_container  # type: ignore[method-assign]
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flash-image-paths-"))
    logs = work / "logs"
    have_image = (
        subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0
    )
    official_artifact = _build(work, None)
    ours_artifact = _build(work, "registry.example/flash")
    interpreter = environment()
    runpod_env = {"RUNPOD_ENDPOINT_ID": "bench", "FLASH_LOG_LEVEL": "WARNING"}

    def app_dir() -> Path:
        return Path(tempfile.mkdtemp(dir=work, prefix="app-"))

    def official_app_dir() -> Path:
        """A new app directory laid out as the official image's ``/app`` (its entry files)."""
        return OfficialImage(interpreter, app_dir()).app_dir

    def lb(kind: str) -> Proc:
        port = free_port()
        base = {**runpod_env, "FLASH_RESOURCE_NAME": "lb_worker", "FLASH_ENDPOINT_TYPE": "lb"}
        if kind == "direct":
            env = server_env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(official_artifact),
                              "FLASH_APP_DIR": str(app_dir()), "PORT": str(port),
                              "FLASH_HOST": "127.0.0.1"})  # fmt: skip
            proc = spawn("direct-lb", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs)
        elif kind == "official":
            here = official_app_dir()
            env = server_env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(official_artifact)})
            cmd = [str(interpreter.parent / "uvicorn"), "lb_handler:app", "--host", "127.0.0.1",
                   "--port", str(port), "--timeout-keep-alive", "600"]  # fmt: skip
            proc = spawn("official-lb", cmd, env, logs, cwd=here)
        else:
            env = {**base, "PORT": str(port), "FLASH_HOST": "127.0.0.1", "RUNPOD_POD_ID": "bench"}
            proc = _docker(f"flash-bench-{uuid.uuid4().hex[:8]}", ours_artifact, env, logs)
        proc.port = port
        return proc

    def qb(kind: str, jobs: JobServerProc) -> float:
        ids = jobs.submit(QB_INPUT)
        base = {**runpod_env, "FLASH_RESOURCE_NAME": "cpu_worker", "FLASH_ENDPOINT_TYPE": "qb",
                **jobs.worker_env(f"bench-{uuid.uuid4().hex[:6]}")}  # fmt: skip
        if kind == "direct":
            env = server_env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(official_artifact),
                              "FLASH_APP_DIR": str(app_dir())})  # fmt: skip
            proc = spawn("direct-qb", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs)
        elif kind == "official":
            here = official_app_dir()
            env = server_env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(official_artifact)})
            proc = spawn("official-qb", [str(interpreter), "handler.py"], env, logs, cwd=here)
        else:
            proc = _docker(f"flash-bench-{uuid.uuid4().hex[:8]}", ours_artifact, base, logs)
        try:
            done = jobs.wait(ids, timeout=120)
            result = (done.get("results") or {}).get(ids[0]) or {}
            if "output" not in result:
                raise RuntimeError(f"{proc.name}: {result}\n{proc.log()}")
            return float(done["last_done"]) - proc.started
        finally:
            proc.stop(timeout=0)

    kinds = ["direct", "official"] + (["container"] if have_image else [])
    times: dict[str, list[float]] = {f"{k}-{w}": [] for k in kinds for w in ("lb", "qb")}
    with JobServerProc(logs, hold=1.0) as jobs:
        for round_ in range(args.runs + 1):
            for kind in kinds:
                proc = lb(kind)
                try:
                    lb_time = wait_first_200(proc) - proc.started
                finally:
                    proc.stop(timeout=0)
                qb_time = qb(kind, jobs)
                if round_:
                    times[f"{kind}-lb"].append(lb_time)
                    times[f"{kind}-qb"].append(qb_time)
    out = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": sys.version.split()[0],
        "runs": args.runs,
        "artifact_bytes": {
            "official target (core vendored)": official_artifact.stat().st_size,
            "our images (no core)": ours_artifact.stat().st_size,
        },
        "seconds": {name: summary(values) for name, values in times.items()},
    }
    if not have_image:
        out["note"] = f"{IMAGE} not found: run bash scripts/test-images to build it"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "image_paths.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'path':<22} {'median s':>9}  [min-max]")
    for name, values in times.items():
        s = summary(values)
        print(f"{name:<22} {s['median']:>9.3f}  [{s['min']:.3f}-{s['max']:.3f}]")
    for label, size in out["artifact_bytes"].items():
        print(f"artifact, {label}: {size / 1024:.1f} KB")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
