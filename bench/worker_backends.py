"""Where local workers run: the cost of each worker backend of the local platform.

``python -m bench.worker_backends [--runs N] [--no-docker]``:

* **image environment creation**: how long the first deploy of an image kind waits for its
  environment (``platform/imageenvs.py``), with uv's cache empty (a fresh ``UV_CACHE_DIR``:
  every wheel from the package index) and with it warm (a new environment, wheels cached);
* **worker cold start** through the platform, from the supervisor starting a worker to the
  worker ready (its first job-take for the queue worker, its first ``/ping`` 200 for the
  load-balanced one), for the ``flash init`` template: ``process`` in the platform's own
  environment, ``process`` in an image environment (our image's ``flash-cpu``, entered through
  our bootstrap; Runpod's ``official-cpu``, entered through the image's own entry), and
  ``docker`` (a container of ``flash-cpu-test:py3.11``, made by ``scripts/test-images``).

Prints medians [min-max] and writes ``bench/results/worker_backends.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from flash_runtime.platform import imageenvs
from flash_runtime.platform.model import EndpointSpec
from flash_runtime.testing.platform import FAST, InProcessPlatform

from .common import RESULTS, summary

IMAGE = "flash-cpu-test:py3.11"
REPOSITORY = "benchflash"


def _env_creation(kind: str, cold: bool) -> float:
    root = Path(tempfile.mkdtemp(prefix="flash-bench-envs-"))
    cache = Path(tempfile.mkdtemp(prefix="flash-bench-uv-")) if cold else None
    saved = os.environ.get("UV_CACHE_DIR")
    if cache is not None:
        os.environ["UV_CACHE_DIR"] = str(cache)
    try:
        started = time.perf_counter()
        imageenvs.environment(root, kind, "3.11")
        return time.perf_counter() - started
    finally:
        if cache is not None:
            shutil.rmtree(cache, ignore_errors=True)
            if saved is None:
                os.environ.pop("UV_CACHE_DIR", None)
            else:
                os.environ["UV_CACHE_DIR"] = saved
        shutil.rmtree(root, ignore_errors=True)


def _spec(name: str, artifact: Path, kind: str, image: str, n: int) -> EndpointSpec:
    resource = "lb_worker" if kind == "lb" else "cpu_worker"
    return EndpointSpec(
        id=f"{name}{kind}{n:04d}".ljust(14, "0")[:14],
        name=f"{name}-{kind}-{n}",
        resource_name=resource,
        type="lb" if kind == "lb" else "qb",
        app_id="bench",
        environment_id="bench",
        build_id=f"b{n}",
        artifact_path=artifact,
        python_version="3.11",
        workers_min=1,
        workers_max=1,
        image=image,
    )


def _cold_starts(
    label: str, settings: Any, artifact: Path, image: str, runs: int, home: Path
) -> dict[str, list[float]]:
    """Seconds from spawn to ready, per endpoint type, over ``runs`` new endpoints."""
    times: dict[str, list[float]] = {"qb": [], "lb": []}
    with InProcessPlatform(home / label, settings) as platform:
        runtime = platform.runtime
        assert runtime is not None
        for n in range(runs + 1):  # the first round fills caches: discarded
            for kind in ("qb", "lb"):
                spec = _spec(label[:4], artifact, kind, image, n)
                platform.apply(spec)
                deadline = time.monotonic() + 120
                while True:
                    ep = runtime.endpoints[spec.id]
                    ready = [w for w in ep.workers.values() if w.ready_at is not None]
                    if ready:
                        if n:
                            times[kind].append(ready[0].ready_at - ready[0].started_at)  # type: ignore[operator]
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"{label}: no {kind} worker ready in 120 s")
                    time.sleep(0.01)
                platform.remove(spec.id)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()

    from flash_runtime.pack import build
    from flash_runtime.pack.scaffold import init_project

    work = Path(tempfile.mkdtemp(prefix="flash-bench-backends-"))
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "runs": args.runs}
    try:
        creation = {}
        for kind in ("flash-cpu", "official-cpu"):
            cold = _env_creation(kind, cold=True)
            warm = _env_creation(kind, cold=False)
            creation[kind] = {"cold_cache_s": round(cold, 2), "warm_cache_s": round(warm, 2)}
            print(f"image environment {kind}: {cold:.1f}s (empty uv cache), {warm:.1f}s (warm)")
        results["environment_creation"] = creation

        ours = build(init_project(work / "ours" / "hello"), image_repository=REPOSITORY).artifact
        official = build(init_project(work / "official" / "hello")).artifact
        envs = work / "envs"
        os.environ["FLASH_PLATFORM_IMAGE_ENVS"] = str(envs)
        image_env = dataclasses.replace(FAST, worker_env="image")
        cases: list[tuple[str, Any, Path, str]] = [
            ("process, platform environment", FAST, ours, f"{REPOSITORY}/flash-cpu:py3.11-latest"),
            ("process, flash-cpu image env", image_env, ours, f"{REPOSITORY}/flash-cpu:py3.11-latest"),
            ("process, official-cpu image env", image_env, official, "runpod/flash-cpu:py3.11-latest"),
        ]  # fmt: skip
        tags = [f"{REPOSITORY}/{n}:py3.11-latest" for n in ("flash-cpu", "flash-lb-cpu")]
        have_image = subprocess.run(["docker", "image", "inspect", IMAGE],
                                    capture_output=True).returncode == 0  # fmt: skip
        if not args.no_docker and have_image:
            for tag in tags:
                subprocess.run(["docker", "tag", IMAGE, tag], check=True)
            docker = dataclasses.replace(FAST, workers="docker")
            cases.append(("docker, flash-cpu-test container", docker, ours, tags[0]))
        elif not args.no_docker:
            print(f"docker: left out ({IMAGE} is missing: bash scripts/test-images builds it)")
        starts: dict[str, Any] = {}
        for label, settings, artifact, image in cases:
            times = _cold_starts(label, settings, artifact, image, args.runs, work / "homes")
            starts[label] = {kind: summary(values) for kind, values in times.items()}
            qb, lb = starts[label]["qb"], starts[label]["lb"]
            print(f"{label:36} queue {qb['median']:.3f}s [{qb['min']:.3f}-{qb['max']:.3f}]  "
                  f"LB {lb['median']:.3f}s [{lb['min']:.3f}-{lb['max']:.3f}]")  # fmt: skip
        results["cold_start_s"] = starts
        if not args.no_docker and have_image:
            subprocess.run(["docker", "rmi", *tags], capture_output=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "worker_backends.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
