"""Packing: wall time of ``flash build`` and the artifact's size, ours against the reference's.

For the template and for ``bench/apps/dep_app``, each round builds with both packers:

* **cold**: every cache empty: a new ``FLASH_HOME`` (our dependency cache) and ``UV_CACHE_DIR``
  for ours, a new ``PIP_CACHE_DIR`` (and ``UV_CACHE_DIR``) for the reference, so wheels are
  downloaded again;
* **warm**: the same build again with the caches the cold build filled.

``--quick`` builds the template once with each packer, with caches kept in
``bench/.cache/pack-warm`` between runs (so warm from the second run on). The time is that of the whole ``flash build`` process, as a user waits for it.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from . import apps
from .common import CACHE, Section, goal, log, ratios, summary
from .reference import RefEnv


def _cache_env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLASH_HOME=str(base / "flash_home"),
        UV_CACHE_DIR=str(base / "uv"),
        PIP_CACHE_DIR=str(base / "pip"),
    )
    env.pop("PYTHONPATH", None)
    env.pop("VIRTUAL_ENV", None)
    return env


def run(
    ref: RefEnv,
    work: Path,
    template_src: Path,
    *,
    quick: bool,
    rounds: int,
) -> tuple[Section, dict[str, Path]]:
    """Returns the section and the template artifacts built (``{"ours": ..., "ref": ...}``)."""
    section = Section("pack")
    started = time.perf_counter()
    projects = {
        "template": template_src,
        "dep_app": apps.bench_app("dep_app", work / "dep_app-src"),
    }
    cases = (
        [("template", "warm")]
        if quick
        else [(app, cache) for app in projects for cache in ("cold", "warm")]
    )
    runs: dict[tuple[str, str, str], list[apps.BuildRun]] = {}
    kept: dict[str, Path] = {}
    for r in range(1 if quick else rounds):
        for app in dict.fromkeys(app for app, _ in cases):
            copies = {
                packer: apps.copy_project(projects[app], work / f"pack-{app}-{packer}")
                for packer in ("ours", "ref")
            }
            for packer in ("ours", "ref"):
                # --quick: the caches are kept between runs; a full run starts them empty
                cache_dir = CACHE / "pack-warm" if quick else work / f"caches-{app}-{packer}-{r}"
                for cache in ("cold", "warm"):
                    if (app, cache) not in cases:
                        continue
                    log(f"pack: {app}, {cache} cache, {packer} packer (round {r + 1})")
                    if quick and packer == "ref":  # its build of this project, made once
                        result = apps.build_ref_cached(copies[packer], _cache_env(cache_dir), ref)
                    else:
                        result = apps.build(packer, copies[packer], _cache_env(cache_dir), ref)
                    runs.setdefault((app, cache, packer), []).append(result)
                    if app == "template":
                        kept[packer] = apps.keep(
                            result, work / "artifacts" / f"template-{packer}.tar.gz"
                        )
                if not quick:
                    shutil.rmtree(cache_dir, ignore_errors=True)

    data: dict[str, Any] = {}
    for app, cache in cases:
        ours = runs[(app, cache, "ours")]
        ref_runs = runs[(app, cache, "ref")]
        t_ours = [b.seconds for b in ours]
        t_ref = [b.seconds for b in ref_runs]
        size_ours, size_ref = ours[-1].size, ref_runs[-1].size
        key = f"{app}/{cache}"
        reused = sorted({b.cached_from for b in ref_runs if b.cached_from})
        if reused:
            section.notes.append(
                f"pack {app}: the reference's time is that of its build of the same files "
                f"made on {', '.join(reused)} (--quick reuses it; a full run builds every time)"
            )
        data[key] = {
            "ours_seconds": summary(t_ours),
            "ref_seconds": summary(t_ref),
            "time_ratio_ref_over_ours": ratios(t_ref, t_ours),
            "ours_bytes": size_ours,
            "ref_bytes": size_ref,
            "size_ratio_ref_over_ours": size_ref / size_ours,
        }
        template = app == "template"
        section.row(
            f"pack {app}, {cache} cache: time",
            "s",
            summary(t_ours),
            "reference",
            summary(t_ref),
            "ref/ours",
            ratios(t_ref, t_ours),
            [goal(">=", 20.0, "ratio", "< 1/20 of the reference's time")] if template else [],
        )
        if cache == "warm":
            section.row(
                f"pack {app}: artifact size",
                "MB",
                summary([size_ours / 1e6]),
                "reference",
                summary([size_ref / 1e6]),
                "ref/ours",
                summary([size_ref / size_ours]),
                [goal(">=", 100.0, "ratio", "< 1/100 of the reference's size")] if template else [],
            )
    section.data = data
    section.seconds = time.perf_counter() - started
    return section, kept
