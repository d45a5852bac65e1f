"""``python -m bench [--quick]``: every benchmark, ours against runpod-flash 1.21.0, in one run.

1. Creates (once; cached in ``bench/.cache``) the reference's virtual environment with
   ``pip install runpod-flash==1.21.0``, and writes the reference's ``flash init`` template.
2. **pack**: builds the template and an app with real dependencies with both packers, cold and
   warm caches (:mod:`bench.pack_bench`); the template artifacts feed the next steps.
3. **cold**: worker cold start, load-balanced and queue-based (:mod:`bench.cold_bench`).
4. **sizes**: cold start against artifact size, real dependency sets, beside GNU tar
   (:mod:`bench.cold_sizes`).
5. **lb**: ``POST /process`` throughput and latency with wrk (:mod:`bench.lb_bench`).
6. **queue**: no-op jobs per second at 1 and 4 slots (:mod:`bench.queue_bench`).
7. **latency**: 5 ms jobs with the job server a 50 ms round trip away
   (:mod:`bench.queue_latency`).
8. **images**: the template's cold start through the official image's entry, beside our
   bootstrap and the reference on the same image (:mod:`bench.image_paths`).
9. **cross**: cross-endpoint calls, by ``bench/cross_bench.py`` (ours only).
10. **platform**: the local platform's ``/runsync`` round trip for a no-op, by
    ``bench/platform_bench.py`` (ours only).
11. **sdk2**: a Runpod SDK 2.0 app (built by the real ``rp``): queue cold start and no-op
    throughput on our runtime, beside the 2.0 runtime's official loop (:mod:`bench.sdk2_bench`).

Prints the table (medians with [min-max] over the runs, and the median of the per-run ratios
beside each goal), and writes ``bench/results/bench.json`` and ``bench/results/bench.png``; a
full run also puts the table in ``bench/README.md``. ``--quick`` runs everything fewer times
and writes ``bench-quick.*`` instead. Nothing is asserted: benchmarks are not tests.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import (
    apps,
    cold_bench,
    cold_sizes,
    image_paths,
    lb_bench,
    pack_bench,
    queue_bench,
    queue_latency,
    report,
    sdk2_bench,
)
from .common import (
    BENCH,
    CACHE,
    RESULTS,
    ROOT,
    Section,
    goal,
    log,
    ratios,
    server_env,
    summary,
)
from .reference import VERSION, RefEnv, ensure_venv

SECTIONS = (
    "pack",
    "cold",
    "sizes",
    "lb",
    "queue",
    "latency",
    "images",
    "cross",
    "platform",
    "sdk2",
)
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "pack_rounds": 2,
        "cold_rounds": 5,
        "cold_repeats": 3,
        "lb_rounds": 3,
        "lb_duration": 5.0,
        "queue_rounds": 2,
        "jobs_ours": 2000,
        "jobs_ref": {1: 5, 4: 16},
        "official_loop": True,
        "cross_rounds": 3,
        "sizes_rounds": 3,
        "latency_rounds": 2,
        "latency_jobs_ours": {1: 100, 4: 200},
        "latency_jobs_ref": {1: 4, 4: 12},
        "images_rounds": 5,
        "sdk2_rounds": 3,
        "sdk2_jobs_ours": 2000,
        "sdk2_jobs_official": {1: 5, 4: 16},
    },
    # --quick: the reference's and the official loop's jobs are few (they take a job a second),
    # but at concurrency 4 always two batches or more: steady_rate counts from the end of the
    # first batch, so four jobs on four slots measured nothing (one instant step)
    "quick": {
        "pack_rounds": 1,
        "cold_rounds": 1,
        "cold_repeats": 2,
        "lb_rounds": 1,
        "lb_duration": 1.0,
        "queue_rounds": 1,
        "jobs_ours": 500,
        "jobs_ref": {1: 2, 4: 8},
        "official_loop": False,
        "cross_rounds": 1,
        "sizes_rounds": 1,
        "latency_rounds": 1,
        "latency_jobs_ours": {1: 30, 4: 60},
        "latency_jobs_ref": {1: 2, 4: 8},
        "images_rounds": 1,
        "sdk2_rounds": 1,
        "sdk2_jobs_ours": 300,
        "sdk2_jobs_official": {1: 2, 4: 8},
    },
}


def cross_section(work: Path, quick: bool, rounds: int) -> tuple[Section, list[tuple[str, ...]]]:
    """Cross-endpoint calls, by ``bench/cross_bench.py`` (its own platform; ours only).

    It is run as it is meant to be run, ``rounds`` times, and its JSON (``--out``) read back:
    the discovery cache hit in µs, and per target kind the client-side p50/p99 of a call
    through the SDK against the same request sent by hand. A missing or failing script gives
    the "not yet available" row and a note, never a failed run.
    """
    section = Section("cross")
    placeholder = [
        (
            "cross-endpoint: discovery cache hit; added latency over a direct call",
            "",
            "not yet available",
            "",
            "",
            "",
            "",
            "",
        )
    ]
    script = BENCH / "cross_bench.py"
    if not script.is_file():
        section.notes.append("cross-endpoint calls: not yet available (no bench/cross_bench.py)")
        return section, placeholder
    started = time.perf_counter()
    requests, hits = ("100", "20000") if quick else ("1000", "200000")
    found = script_runs(
        section, work, "cross_bench.py", ["--requests", requests, "--hits", hits], rounds
    )
    if found is None:
        return section, placeholder
    results = [r["results"] for r in found]
    section.data = {"runs": results}
    hit = [float(x["discovery_cache_hit_us"]) for x in results]
    section.row(
        "cross-endpoint: discovery cache hit",
        "µs",
        summary(hit),
        "",
        summary([]),
        "",
        summary([]),
    )
    for kind, label in (("queue_based", "QB"), ("load_balanced", "LB")):
        for pct in ("p50", "p99"):
            client = [float(x[kind]["client"][f"{pct}_ms"]) for x in results]
            direct = [float(x[kind]["direct"][f"{pct}_ms"]) for x in results]
            added = [c - d for c, d in zip(client, direct, strict=True)]
            section.row(
                f"cross-endpoint {label} call {pct} (added {fmt_ms(added)} ms)",
                "ms",
                summary(client),
                "direct call",
                summary(direct),
                "ours/direct",
                ratios(client, direct),
            )
    section.seconds = time.perf_counter() - started
    return section, []


def script_runs(
    section: Section, work: Path, script: str, args: list[str], rounds: int
) -> list[dict[str, Any]] | None:
    """``bench/<script> ARGS --out FILE`` run ``rounds`` times, as it is meant to be run; its
    JSON outputs, or None (and a note) when a run fails."""
    results = []
    for r in range(rounds):
        out = work / f"{script.removesuffix('.py')}-{r}.json"
        log(f"{section.name}: bench/{script} {' '.join(args)} (round {r + 1}/{rounds})")
        proc = subprocess.run(
            [sys.executable, str(BENCH / script), *args, "--out", str(out)],
            capture_output=True,
            text=True,
            env=server_env(),
            cwd=ROOT,
        )
        if proc.returncode != 0 or not out.is_file():
            section.notes.append(
                f"bench/{script} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}"
            )
            return None
        results.append(json.loads(out.read_text()))
    return results


def platform_section(work: Path, quick: bool, rounds: int) -> Section:
    """The platform's ``/runsync`` p50 and jobs/s for a no-op on one worker, by
    ``bench/platform_bench.py`` run ``rounds`` times (its JSON read back)."""
    section = Section("platform")
    started = time.perf_counter()
    requests, duration = ("300", "2") if quick else ("2000", "8")
    found = script_runs(
        section, work, "platform_bench.py", ["--requests", requests, "--duration", duration], rounds
    )
    if found is None:
        return section
    ones = [r["results"]["1_worker"] for r in found]
    p50 = [float(one["runsync_latency"]["p50_ms"]) for one in ones]
    rate = [float(one["runsync_throughput"]["jobs_per_s"]) for one in ones]
    section.data = {"p50_ms": p50, "jobs_per_s": rate}
    section.row(
        "platform /runsync p50, no-op, one worker",
        "ms",
        summary(p50),
        "",
        summary([]),
        "",
        summary([]),
        [goal("<=", 1.0, "ours", "<= 1 ms")],
    )
    section.row(
        "platform /runsync throughput, 32 clients, one worker",
        "jobs/s",
        summary(rate),
        "",
        summary([]),
        "",
        summary([]),
    )
    section.seconds = time.perf_counter() - started
    return section


def fmt_ms(values: list[float]) -> str:
    return report.fmt(summary(values)["median"])


def both_packers(ref: RefEnv, work: Path, app: str, *, reuse: bool = False) -> dict[str, Path]:
    """``bench/apps/<app>`` built by each packer (warm package caches): artifact per packer
    (``reuse``: the reference's build may come from its cache, as ``--quick`` does)."""
    env = pack_bench._cache_env(CACHE / "pack-warm")
    return {
        packer: apps.build_quietly(
            packer,
            apps.bench_app(app, work / f"{app}-{packer}"),
            env,
            ref,
            work / "artifacts" / f"{app}-{packer}.tar.gz",
            reuse=reuse,
        )
        for packer in ("ours", "ref")
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    parser.add_argument("--quick", action="store_true", help="fewer runs: under 2 minutes")
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--refresh-reference", action="store_true", help="recreate the reference's environment"
    )
    parser.add_argument("--keep-work", action="store_true", help="keep the work directory")
    parser.add_argument("--no-readme", action="store_true", help="leave bench/README.md alone")
    parser.add_argument(
        "--render",
        action="store_true",
        help="run nothing: print the table of bench/results/bench.json and put it in the README",
    )
    args = parser.parse_args(argv)
    if args.render:
        return render(RESULTS / "bench.json")
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    mode = "quick" if args.quick else "full"
    settings = SETTINGS[mode]
    command = "python -m bench" + (" --quick" if args.quick else "")
    if set(only) != set(SECTIONS):
        command += f" --only {','.join(only)}"

    started = time.perf_counter()
    if ("lb" in only) and (missing := lb_bench.check_wrk()):
        log(f"wrk is not installed: LB throughput will be skipped. Install it: {missing}")
    ref = ensure_venv(refresh=args.refresh_reference)
    work = Path(tempfile.mkdtemp(prefix="flash-bench-"))
    sections: list[Section] = []
    extra_rows: list[tuple[str, ...]] = []
    try:
        template_src = apps.init_template(ref, work)
        artifacts: dict[str, Path] = {}
        if "pack" in only:
            section, artifacts = pack_bench.run(
                ref, work, template_src, quick=args.quick, rounds=settings["pack_rounds"]
            )
            sections.append(section)
        need_runtime = {"cold", "lb"} & set(only)
        if need_runtime and set(artifacts) != {"ours", "ref"}:
            env = pack_bench._cache_env(CACHE / "pack-warm")
            for packer in ("ours", "ref"):
                project = apps.copy_project(template_src, work / f"template-{packer}")
                artifacts[packer] = apps.build_quietly(
                    packer,
                    project,
                    env,
                    ref,
                    work / "artifacts" / f"template-{packer}.tar.gz",
                    reuse=args.quick,
                )
        extracted: dict[str, Path] = {}
        if "cold" in only:
            section = cold_bench.run(
                ref,
                work,
                artifacts,
                rounds=settings["cold_rounds"],
                repeats=settings["cold_repeats"],
                quick=args.quick,
            )
            sections.append(section)
            extracted = section.handoff.get("lb_app_dirs", {})
        if "sizes" in only:
            sections.append(
                cold_sizes.run(ref, work, rounds=settings["sizes_rounds"], quick=args.quick)
            )
        if "lb" in only:
            sections.append(
                lb_bench.run(
                    ref,
                    work,
                    artifacts,
                    rounds=settings["lb_rounds"],
                    duration=settings["lb_duration"],
                    extracted=extracted,
                )
            )
        if "queue" in only:
            noop = both_packers(ref, work, "qb_noop", reuse=args.quick)
            sections.append(
                queue_bench.run(
                    ref,
                    work,
                    noop,
                    rounds=settings["queue_rounds"],
                    jobs_ours=settings["jobs_ours"],
                    jobs_ref=settings["jobs_ref"],
                    official_loop=settings["official_loop"],
                )
            )
        if "latency" in only:
            working = both_packers(ref, work, "qb_work", reuse=args.quick)
            sections.append(
                queue_latency.run(
                    ref,
                    work,
                    working,
                    rounds=settings["latency_rounds"],
                    jobs_ours=settings["latency_jobs_ours"],
                    jobs_ref=settings["latency_jobs_ref"],
                )
            )
        if "images" in only:
            sections.append(
                image_paths.run(
                    ref,
                    work,
                    rounds=settings["images_rounds"],
                    ref_artifact=artifacts.get("ref"),
                    with_reference=not args.quick,
                )
            )
        if "cross" in only:
            section, rows = cross_section(work, args.quick, settings["cross_rounds"])
            sections.append(section)
            extra_rows += rows
        if "platform" in only:
            sections.append(platform_section(work, args.quick, settings["cross_rounds"]))
        if "sdk2" in only:
            sections.append(
                sdk2_bench.run(
                    work,
                    rounds=settings["sdk2_rounds"],
                    jobs_ours=settings["sdk2_jobs_ours"],
                    jobs_official=settings["sdk2_jobs_official"],
                )
            )
    finally:
        if args.keep_work:
            log(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    total = time.perf_counter() - started
    when = time.strftime("%Y-%m-%d %H:%M %Z")
    info = report.machine()
    header = (
        f"{when} · {info['cpus']} CPUs ({info['cpu']}), {info['memory']} · "
        f"Python {info['python']} · runpod-flash {VERSION} · `{command}` · "
        f"{total:.0f} s in all"
    )
    print()
    print(header)
    print(report.console(sections, extra_rows))
    notes = [n for s in sections for n in s.notes]
    for note in notes:
        print(f"note: {note}")
    missed = report.missed(sections)
    print(f"\ngoals missed: {len(missed)}" + "".join(f"\n  - {m}" for m in missed))

    suffix = "" if mode == "full" else "-quick"
    payload = {
        "date": when,
        "command": command,
        "mode": mode,
        "settings": {k: v for k, v in settings.items()},
        "machine": info,
        "tools": report.tool_versions(),
        "reference": {
            "version": VERSION,
            "environment": str(ref.root),
            "setup_seconds": ref.setup_seconds,
            "packages": ref.packages.splitlines(),
        },
        "seconds": total,
        "sections": {
            s.name: {"seconds": s.seconds, "data": s.data, "rows": s.rows, "notes": s.notes}
            for s in sections
        },
        "goals_missed": missed,
        "header": header,
        "extra_rows": extra_rows,
    }
    json_path = RESULTS / f"bench{suffix}.json"
    report.write_json(json_path, payload)
    png_path = RESULTS / f"bench{suffix}.png"
    problem = report.chart(png_path, {s.name: s for s in sections})
    print(f"\nwritten: {json_path}" + (f", {png_path}" if problem is None else f" ({problem})"))
    if mode == "full" and set(only) == set(SECTIONS) and not args.no_readme:
        readme_table(header, sections, extra_rows)
    return 0


def readme_table(header: str, sections: list[Section], extra_rows: list[tuple[str, ...]]) -> None:
    notes = [n for s in sections for n in s.notes]
    block = "\n".join(
        [header, "", report.markdown(sections, extra_rows), "", *(f"* {n}" for n in notes)]
    ).rstrip()
    report.update_readme(BENCH / "README.md", block)
    print(f"table written to {BENCH / 'README.md'}")


def render(path: Path) -> int:
    """The table of a results file again (after a change to the table's layout)."""
    payload = json.loads(path.read_text())
    sections = [
        Section(name, rows=s["rows"], notes=s["notes"], seconds=s["seconds"])
        for name, s in payload["sections"].items()
    ]
    extra_rows = [tuple(r) for r in payload.get("extra_rows", [])]
    header = payload.get("header") or f"{payload['date']} · `{payload['command']}`"
    print(header)
    print(report.console(sections, extra_rows))
    if payload.get("mode") == "full":
        readme_table(header, sections, extra_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
