"""Cold start against artifact size: the first 200 of a load-balanced worker whose artifact
carries real dependencies, ours and the reference, beside GNU tar extracting the same artifact.

Four apps, one load-balanced endpoint ``lb_worker`` each (``POST /process`` echoes its input, as
the template's does; ``POST /stats`` imports pandas and scipy and computes), built by both
packers for this Python:

* **template**: no dependencies (the reference's own template, ``runpod-flash`` in its
  ``requirements.txt``, is the cold-start section's; here nothing is bundled but the code);
* **pillow** (~23 MB installed), **numpy** (~64 MB), **pandas + scipy + scikit-learn**
  (~300 MB, 6,700 files: the issue's "real dependency set").

Per run, each worker starts on a new app directory (extracting its artifact) and is polled until
``POST /process`` answers 200: ours (``python -m flash_runtime.bootstrap``), the reference (its
image's ``uvicorn lb_handler:app``, ``bench/refimage``), and, as the yardstick, ``tar xzf`` of
our artifact alone (no interpreter, no server). The goal is on the largest set: ours within
0.6x of GNU tar's extraction time alone, per run pair. The ``/stats`` row adds the imports a
real first request makes; a ``-X importtime`` run of ours says where they go.

App directories are on tmpfs (``/dev/shm``) where there is one, so the figures measure the
extractors rather than this machine's virtual disk (whose write-back stalls vary by seconds);
the libraries' own bytecode comes from their environments (no ``PYTHONPYCACHEPREFIX``, so
bytecode shipped in an artifact is used, as on Runpod).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from . import apps, lb_bench, pack_bench
from .common import (
    CACHE,
    Section,
    free_port,
    goal,
    log,
    ratios,
    server_env,
    summary,
    wait_first_200,
)
from .reference import RefEnv

APP = """\
from runpod_flash import Endpoint

api = Endpoint(name="lb_worker", cpu="cpu3c-2-4", workers=(0, 1){deps})


@api.post("/process")
async def process(input_data: dict) -> dict:
    from datetime import datetime

    return {{"status": "success", "echo": input_data, "timestamp": datetime.now().isoformat()}}


@api.post("/stats")
async def stats(input_data: dict) -> dict:
    import pandas as pd
    from scipy import stats as st

    frame = pd.DataFrame({{"x": [float(len(str(v))) for v in input_data.values()]}})
    return {{"mean": float(frame["x"].mean()), "skew": float(st.skew(frame["x"]))}}
"""
SETS: list[tuple[str, list[str]]] = [
    ("template", []),
    ("pillow", ["pillow"]),
    ("numpy", ["numpy"]),
    ("pandas+scipy+sklearn", ["pandas", "scipy", "scikit-learn"]),
]
LARGEST = SETS[-1][0]


def project(work: Path, name: str, deps: list[str]) -> Path:
    dest = work / f"sized-{re.sub(r'[^a-z]+', '-', name)}"
    dest.mkdir(parents=True, exist_ok=True)
    listed = f", dependencies={deps!r}" if deps else ""
    (dest / "lb_worker.py").write_text(APP.format(deps=listed))
    return dest


def installed_mb(artifact: Path) -> float:
    with tarfile.open(artifact) as tf:
        return sum(m.size for m in tf.getmembers() if m.isfile()) / 1e6


def _scratch() -> Path:
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="flash-bench-cold-", dir=base))


def _env() -> dict[str, str]:
    return server_env(bytecode_cache=False)


def _first(launch: lb_bench.Launcher, path: str = "/process") -> float:
    proc = launch(free_port())
    try:
        return wait_first_200(proc, timeout=300, path=path) - proc.started
    finally:
        proc.stop(timeout=0)


def _tar(artifact: Path, target: Path) -> float:
    target.mkdir(parents=True)
    started = time.perf_counter()
    subprocess.run(["tar", "xzf", str(artifact), "-C", str(target)], check=True)
    return time.perf_counter() - started


def _importtime(logs: Path, artifact: Path, app_dir: Path) -> list[tuple[str, float]]:
    """What the first ``/stats`` imports, by cumulative import time (s): the modules imported
    from the route itself or on first use (scipy loads its submodules lazily)."""
    env = _env()
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    launch = lb_bench.ours(logs, artifact, lambda: app_dir, base=env)
    proc = launch(free_port())
    try:
        wait_first_200(proc, timeout=300, path="/process")
        before = proc.log_path.stat().st_size
        wait_first_200(proc, timeout=300, path="/stats")
        with open(proc.log_path, "rb") as f:
            f.seek(before)
            text = f.read().decode(errors="replace")
    finally:
        proc.stop(timeout=0)
    tops: dict[str, float] = {}
    for line in text.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if match and not match.group(2):  # imported from the route, not by another module
            name = match.group(3)
            tops[name] = tops.get(name, 0.0) + int(match.group(1)) / 1e6
    return sorted(tops.items(), key=lambda kv: -kv[1])[:8]


def run(ref: RefEnv, work: Path, *, rounds: int, quick: bool) -> Section:
    section = Section("sizes")
    started = time.perf_counter()
    logs = work / "logs"
    scratch = _scratch()
    counter = itertools.count()
    env = pack_bench._cache_env(CACHE / "pack-warm")
    # --quick: the template and pillow only (the large set's builds alone take minutes cold)
    sets = SETS if not quick else [SETS[0], SETS[1]]
    artifacts: dict[str, dict[str, Path]] = {}
    sizes: dict[str, dict[str, float]] = {}
    for name, deps in sets:
        src = project(work, name, deps)
        artifacts[name] = {}
        for packer in ("ours", "ref"):
            proj = apps.copy_project(src, work / f"{src.name}-{packer}")
            artifacts[name][packer] = apps.build_quietly(
                packer,
                proj,
                env,
                ref,
                work / "artifacts" / f"{src.name}-{packer}.tar.gz",
                reuse=quick,  # --quick: the reference's builds come from its cache
            )
        sizes[name] = {
            "artifact_mb": artifacts[name]["ours"].stat().st_size / 1e6,
            "installed_mb": installed_mb(artifacts[name]["ours"]),
            "ref_artifact_mb": artifacts[name]["ref"].stat().st_size / 1e6,
        }

    def fresh() -> Path:
        path = scratch / f"app-{next(counter)}"
        return path

    times: dict[str, dict[str, list[float]]] = {
        name: {"ours": [], "ref": [], "tar": [], "ours_stats": [], "ref_stats": []}
        for name, _ in sets
    }
    env_run = _env()
    try:
        # Round 0 warms the libraries' page cache, not counted; --quick skips it once a run made
        # the marker (a full run always warms).
        marker = CACHE / "pycache" / ".warm-sizes"
        first = 1 if quick and marker.is_file() else 0
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        for r in range(first, rounds + 1):
            log(f"cold start by artifact size: {'warm-up' if r == 0 else f'round {r}/{rounds}'}")
            for name, _ in sets:
                ours = lb_bench.ours(logs, artifacts[name]["ours"], fresh, base=env_run)
                theirs = lb_bench.reference(logs, ref, artifacts[name]["ref"], fresh, base=env_run)
                figures = {
                    "tar": _tar(artifacts[name]["ours"], fresh()),
                    "ours": _first(ours),
                    "ref": _first(theirs),
                }
                if name == LARGEST:
                    figures["ours_stats"] = _first(ours, "/stats")
                    figures["ref_stats"] = _first(theirs, "/stats")
                if r:
                    for key, value in figures.items():
                        times[name][key].append(value)
                for path in scratch.iterdir():
                    shutil.rmtree(path, ignore_errors=True)
        profile = (
            _importtime(logs, artifacts[LARGEST]["ours"], fresh()) if LARGEST in artifacts else []
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    section.data = {
        "sizes": sizes,
        "times": {n: {k: summary(v) for k, v in t.items() if v} for n, t in times.items()},
        "imports": profile,
    }
    for name, _ in sets:
        t = times[name]
        label = f"{name} ({sizes[name]['artifact_mb']:.1f} MB, {sizes[name]['installed_mb']:.0f} MB installed)"
        goals: list[dict[str, Any]] = []
        if name == LARGEST:
            goals = [goal("<=", 0.6, "ratio", "<= 0.6x GNU tar's extraction alone")]
        section.row(
            f"cold start LB, {label}: vs GNU tar",
            "s",
            summary(t["ours"]),
            "tar xzf alone",
            summary(t["tar"]),
            "ours/tar",
            ratios(t["ours"], t["tar"]),
            goals,
        )
        section.row(
            f"cold start LB, {label}: vs reference",
            "s",
            summary(t["ours"]),
            "reference",
            summary(t["ref"]),
            "ref/ours",
            ratios(t["ref"], t["ours"]),
        )
    if LARGEST in times:
        t = times[LARGEST]
        section.row(
            f"first /stats (imports pandas, scipy), {LARGEST}",
            "s",
            summary(t["ours_stats"]),
            "reference",
            summary(t["ref_stats"]),
            "ref/ours",
            ratios(t["ref_stats"], t["ours_stats"]),
        )
        section.notes.append(
            f"{LARGEST}: what the first /stats imports (ours, -X importtime, cumulative): "
            + ", ".join(f"{n} {s:.2f} s" for n, s in profile)
        )
    section.seconds = time.perf_counter() - started
    return section


def chart_points(section: Section) -> dict[str, list[tuple[float, float]]]:
    """(installed MB, median first 200 in s) per variant, for the chart."""
    data = section.data
    out: dict[str, list[tuple[float, float]]] = {"ours": [], "reference": [], "GNU tar": []}
    for name, size in data.get("sizes", {}).items():
        figures = data["times"].get(name, {})
        for key, label in (("ours", "ours"), ("ref", "reference"), ("tar", "GNU tar")):
            median = figures.get(key, {}).get("median")
            if median is not None:
                out[label].append((size["installed_mb"], median))
    return out


def main() -> int:
    import argparse

    from .reference import ensure_venv

    parser = argparse.ArgumentParser(prog="python -m bench.cold_sizes", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    ref = ensure_venv()
    work = Path(tempfile.mkdtemp(prefix="flash-bench-"))
    try:
        section = run(ref, work, rounds=args.rounds, quick=args.quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from . import report

    print(report.console([section], []))
    for note in section.notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
