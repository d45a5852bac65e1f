"""Cold start of the ``flash init`` template through the ways a worker starts.

``python -m bench.image_paths [--runs N]``, and the ``images`` section of ``python -m bench``
(the container path needs the images that ``bash scripts/test-images`` builds; it is left out,
with a note, when they are missing):

* **direct**: ``python -m flash_runtime.bootstrap`` (our images' command, and the local
  platform's), artifact extracted into a new directory each run;
* **official image path**: the artifact built for Runpod's images, started as those images start
  it (``flash_runtime/platform/official_image/``: ``uvicorn lb_handler:app`` / ``python handler.py`` in an
  environment with their package set); their entry extracts it with ``tarfile`` and loads
  ``handler_<resource>.py``, which hands over to our worker;
* **the official image's floor**: the same entry with an artifact whose entry file *is* the
  worker (a FastAPI app with ``POST /process`` defined in ``handler_lb_worker.py``, a plain
  ``handler`` in ``handler_cpu_worker.py``): what any artifact costs on that image before its
  own code runs;
* **the reference**: its own template artifact, started as its image starts it
  (``bench/refimage``, see ``bench/README.md``);
* **our image, in a container**: ``docker run`` of ``flash-cpu-test:py3.11`` (host network, the
  artifact mounted at ``/root/.runpod/artifact.tar.gz``), measured from ``docker run``.

Each run measures process start to the first 200 from ``POST /process`` (``lb_worker``) or to
the job server receiving the first job's result (``cpu_worker``, the job queued first). A first
round is discarded (it fills the bytecode caches). Every start follows an ``os.sync()``, and
the order of the paths turns each round. Prints medians [min-max] and writes
``bench/results/image_paths.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flash_runtime.testing.official import OfficialImage, environment

from . import apps, lb_bench, pack_bench, queue_bench
from .common import (
    CACHE,
    PYTHON,
    RESULTS,
    Proc,
    Section,
    free_port,
    goal,
    log,
    ratios,
    server_env,
    spawn,
    summary,
    wait_first_200,
)
from .queue_bench import JobServerProc
from .reference import RefEnv

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
    proc = spawn(name, [*cmd, IMAGE], _env(), logs)
    stop = proc.stop

    def stop_container(timeout: float = 15) -> None:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        stop(timeout)

    proc.stop = stop_container  # type: ignore[method-assign]
    return proc


FLOOR_LB = b"""from datetime import datetime

from fastapi import FastAPI

app = FastAPI()


@app.post("/process")
async def process(body: dict) -> dict:
    return {"status": "success", "echo": body, "timestamp": datetime.now().isoformat()}
"""
FLOOR_QB = b"""def handler(job):
    return {"echo": job["input"]}
"""


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """A server's environment without the benchmarks' bytecode cache: the image environments
    hold their packages' bytecode (as the images do), and the artifact ships its own."""
    return server_env(extra, bytecode_cache=False)


def _floor_artifact(work: Path) -> Path:
    """An artifact whose entry files are the worker itself (no hand-over, no vendored core)."""
    from flash_runtime.pack import tarball

    entries = [
        tarball.Entry("handler_lb_worker.py", data=FLOOR_LB),
        tarball.Entry("handler_cpu_worker.py", data=FLOOR_QB),
    ]
    path = work / "floor" / "artifact.tar.gz"
    return tarball.write_artifact(path, entries, mtime=1_700_000_000).path


def measure(
    work: Path,
    runs: int,
    ref: RefEnv | None = None,
    ref_artifacts: dict[str, Path] | None = None,
    *,
    warm_up: bool = True,
    containers: bool = True,
) -> dict[str, Any]:
    """Every path's LB and QB times (``runs`` rounds after a discarded one, unless not
    ``warm_up``), and the artifacts' sizes. The reference is measured when ``ref`` and its
    template artifact are given; our image in a container when ``containers`` and it is
    built."""
    logs = work / "logs"
    have_image = (
        containers
        and subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode
        == 0
    )
    official_artifact = _build(work, None)
    ours_artifact = _build(work, "registry.example/flash")
    floor_artifact = _floor_artifact(work)
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
            env = _env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(official_artifact),
                              "FLASH_APP_DIR": str(app_dir()), "PORT": str(port),
                              "FLASH_HOST": "127.0.0.1"})  # fmt: skip
            proc = spawn("direct-lb", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs)
        elif kind in ("official", "floor"):
            here = official_app_dir()
            artifact = official_artifact if kind == "official" else floor_artifact
            env = _env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(artifact)})
            cmd = [str(interpreter.parent / "uvicorn"), "lb_handler:app", "--host", "127.0.0.1",
                   "--port", str(port), "--timeout-keep-alive", "600"]  # fmt: skip
            proc = spawn(f"{kind}-lb", cmd, env, logs, cwd=here)
        elif kind == "reference":
            assert ref is not None and ref_artifacts is not None
            proc = lb_bench.reference(logs, ref, ref_artifacts["lb"], app_dir, base=_env())(port)
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
            env = _env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(official_artifact),
                              "FLASH_APP_DIR": str(app_dir())})  # fmt: skip
            proc = spawn("direct-qb", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs)
        elif kind in ("official", "floor"):
            here = official_app_dir()
            artifact = official_artifact if kind == "official" else floor_artifact
            env = _env({**base, "FLASH_BUILD_ARTIFACT_PATH": str(artifact),
                              **queue_bench.OFFICIAL_LOOP_KNOBS})  # fmt: skip
            proc = spawn(f"{kind}-qb", [str(interpreter), "handler.py"], env, logs, cwd=here)
        elif kind == "reference":
            assert ref is not None and ref_artifacts is not None
            jobs_env = {k: v for k, v in base.items() if k.startswith("RUNPOD_WEBHOOK")}
            jobs_env.update({k: v for k, v in base.items() if k in _RUNPOD_KEYS})
            proc = queue_bench.ref_worker(
                logs, ref, ref_artifacts["qb"], app_dir(), "cpu_worker", jobs_env
            )
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

    kinds = ["direct", "official", "floor"]
    kinds += ["reference"] if ref is not None and ref_artifacts else []
    kinds += ["container"] if have_image else []
    times: dict[str, list[float]] = {f"{k}-{w}": [] for k in kinds for w in ("lb", "qb")}
    with JobServerProc(logs, hold=1.0) as jobs:
        for round_ in range(0 if warm_up else 1, runs + 1):
            log(f"image paths: {'warm-up' if round_ == 0 else f'round {round_}/{runs}'}")
            # Each start begins with no dirty pages of the one before (the reference's start
            # writes its 47 MB artifact out, docker's vfs driver copies an image per container:
            # their writeback fell on whichever start came next, ours, every round), and the
            # order turns each round, so no path always follows the same one.
            shift = round_ % len(kinds)
            for kind in kinds[shift:] + kinds[:shift]:
                os.sync()
                proc = lb(kind)
                try:
                    lb_time = wait_first_200(proc) - proc.started
                finally:
                    proc.stop(timeout=0)
                os.sync()
                qb_time = qb(kind, jobs)
                if round_:
                    times[f"{kind}-lb"].append(lb_time)
                    times[f"{kind}-qb"].append(qb_time)
    out: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "python": sys.version.split()[0],
        "runs": runs,
        "artifact_bytes": {
            "official target (core vendored)": official_artifact.stat().st_size,
            "our images (no core)": ours_artifact.stat().st_size,
        },
        "times": times,
        "seconds": {name: summary(values) for name, values in times.items()},
    }
    if not have_image and containers:
        out["note"] = f"{IMAGE} not found: run bash scripts/test-images to build it"
    return out


_RUNPOD_KEYS = ("RUNPOD_AI_API_KEY", "RUNPOD_POD_ID", "RUNPOD_PING_INTERVAL")


def run(
    ref: RefEnv,
    work: Path,
    *,
    rounds: int,
    ref_artifact: Path | None = None,
    with_reference: bool = True,
) -> Section:
    """The ``images`` section of ``python -m bench``; ``ref_artifact``: the reference's build of
    the template, when an earlier section made one (else it is built here). Without the
    reference (``--quick``: its two starts take ~15 s a round) the reference rows are empty."""
    section = Section("images")
    started = time.perf_counter()
    if not with_reference:
        # --quick: no discarded round once a run has filled the environments' bytecode caches,
        # and no container (docker run alone is seconds here: ~14 s a round of two)
        marker = CACHE / "pycache" / ".warm-images"
        out = measure(work / "images", rounds, warm_up=not marker.is_file(), containers=False)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        return _rows(section, out, started)
    if ref_artifact is None:
        env = pack_bench._cache_env(CACHE / "pack-warm")
        template = apps.init_template(ref, work / "images-template")
        ref_artifact = apps.build_quietly(
            "ref", apps.copy_project(template, work / "images-ref"), env, ref,
            work / "artifacts" / "images-template-ref.tar.gz",
        )  # fmt: skip
    out = measure(work / "images", rounds, ref, {"lb": ref_artifact, "qb": ref_artifact})
    return _rows(section, out, started)


def _rows(section: Section, out: dict[str, Any], started: float) -> Section:
    t = out["times"]
    section.data = out
    for kind, what in (("lb", "first 200 of POST /process"), ("qb", "first job's result")):
        section.row(
            f"official image path, {kind.upper()} {what}: vs the reference on its image",
            "s",
            summary(t[f"official-{kind}"]),
            "reference",
            summary(t.get(f"reference-{kind}", [])),
            "ref/ours",
            ratios(
                t.get(f"reference-{kind}", []),
                t[f"official-{kind}"][: len(t.get(f"reference-{kind}", []))],
            ),
            [goal("<=", 0.6, "ours", "<= 0.6 s")],
        )
        section.row(
            f"official image path, {kind.upper()}: vs the image's floor (its entry alone)",
            "s",
            summary(t[f"official-{kind}"]),
            "image floor",
            summary(t[f"floor-{kind}"]),
            "ours/floor",
            ratios(t[f"official-{kind}"], t[f"floor-{kind}"]),
        )
        section.row(
            f"official image path, {kind.upper()}: vs our bootstrap directly (info)",
            "s",
            summary(t[f"official-{kind}"]),
            "direct",
            summary(t[f"direct-{kind}"]),
            "ours/direct",
            ratios(t[f"official-{kind}"], t[f"direct-{kind}"]),
        )
    if "note" in out:
        section.notes.append(out["note"])
    section.seconds = time.perf_counter() - started
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flash-image-paths-"))
    try:
        out = measure(work, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out.pop("times")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "image_paths.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"{'path':<22} {'median s':>9}  [min-max]")
    for name, s in out["seconds"].items():
        print(f"{name:<22} {s['median']:>9.3f}  [{s['min']:.3f}-{s['max']:.3f}]")
    for label, size in out["artifact_bytes"].items():
        print(f"artifact, {label}: {size / 1024:.1f} KB")


if __name__ == "__main__":
    main()
