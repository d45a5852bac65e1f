"""The results: the table (console and Markdown), the JSON, the chart, the README's copy."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .common import Section

README_START = "<!-- results:start -->"
README_END = "<!-- results:end -->"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = "?"
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory": memory,
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "load_average_at_end": load,
    }


def tool_versions() -> dict[str, str]:
    versions = {}
    try:
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        versions["wrk"] = out.split("[")[0].strip() or out.strip()
    except OSError:
        versions["wrk"] = "missing"
    return versions


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if magnitude >= 0.1:
        return f"{value:.3f}"
    return f"{value:.3g}"


def cell(s: dict[str, Any]) -> str:
    if s.get("median") is None:
        return "-"
    text = fmt(s["median"])
    if len(s.get("runs", [])) > 1:
        text += f" [{fmt(s['min'])}\u2013{fmt(s['max'])}]"
    return text


def ratio_cell(label: str, s: dict[str, Any]) -> str:
    if s.get("median") is None:
        return "-"
    text = f"{label} {fmt(s['median'])}x"
    if len(s.get("runs", [])) > 1:
        text += f" [{fmt(s['min'])}\u2013{fmt(s['max'])}]"
    return text


def goal_cells(row: dict[str, Any]) -> tuple[str, str]:
    goals = row.get("goals") or []
    if not goals:
        return "", ""
    texts = "; ".join(g["text"] for g in goals)
    met = "; ".join("n/a" if g["met"] is None else ("yes" if g["met"] else "**NO**") for g in goals)
    return texts, met


HEADER = ("measurement", "unit", "ours", "vs", "other", "ratio (per run)", "goal", "met")


def table_rows(sections: Sequence[Section]) -> list[tuple[str, ...]]:
    rows = []
    for section in sections:
        for row in section.rows:
            goal, met = goal_cells(row)
            rows.append(
                (
                    row["what"],
                    row["unit"],
                    cell(row["ours"]),
                    row["other_label"],
                    cell(row["other"]),
                    ratio_cell(row["ratio_label"], row["ratio"]),
                    goal,
                    met,
                )
            )
    return rows


def markdown(sections: Sequence[Section], extra_rows: Sequence[tuple[str, ...]] = ()) -> str:
    rows = table_rows(sections) + list(extra_rows)
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def console(sections: Sequence[Section], extra_rows: Sequence[tuple[str, ...]] = ()) -> str:
    rows = [HEADER, *table_rows(sections), *extra_rows]
    rows = [tuple(c.replace("**", "") for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    out = []
    for n, r in enumerate(rows):
        out.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def missed(sections: Sequence[Section]) -> list[str]:
    out = []
    for section in sections:
        for row in section.rows:
            for g in row.get("goals") or []:
                if g["met"] is False:
                    out.append(f"{row['what']}: goal {g['text']}")
    return out


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    tmp.replace(path)


def update_readme(readme: Path, block: str) -> None:
    text = readme.read_text()
    pattern = re.compile(re.escape(README_START) + r".*?" + re.escape(README_END), re.S)
    replacement = f"{README_START}\n{block}\n{README_END}"
    if pattern.search(text):
        text = pattern.sub(lambda _m: replacement, text)
    else:
        text += f"\n{replacement}\n"
    readme.write_text(text)


def chart(path: Path, sections: dict[str, Section]) -> str | None:
    """A PNG of the main figures (medians, min-max whiskers); None, or why it was not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]'); no chart"

    panels: list[tuple[str, str, list[tuple[str, dict[str, Any], dict[str, Any], str]], bool]] = []

    def rows_of(name: str, prefix: str) -> list[dict[str, Any]]:
        section = sections.get(name)
        return [r for r in (section.rows if section else []) if r["what"].startswith(prefix)]

    lb = rows_of("lb", "LB /process throughput")
    if lb:
        ref_row = next(r for r in lb if r["other_label"] == "reference")
        bare_row = next(r for r in lb if r["other_label"] != "reference")
        panels.append(
            (
                "LB POST /process (req/s, higher is better)",
                "req/s",
                [
                    ("bare", bare_row["other"], {}, "#999999"),
                    ("ours", ref_row["ours"], {}, "#2a7ab9"),
                    ("reference", ref_row["other"], {}, "#d9822b"),
                ],
                False,
            )
        )
    cold = rows_of("cold", "cold start")
    if cold:
        bars = []
        for r in cold:
            if "info" in r["what"]:
                continue
            kind = "LB" if " LB " in r["what"] else "QB"
            if r["other_label"] == "reference":
                bars += [
                    (f"{kind} ours", r["ours"], {}, "#2a7ab9"),
                    (f"{kind} ref", r["other"], {}, "#d9822b"),
                ]
            else:
                bars.append((f"{kind} bare", r["other"], {}, "#999999"))
        panels.append(("Cold start (s, lower is better, log)", "s", bars, True))
    queue = rows_of("queue", "queue")
    qbars = []
    for r in queue:
        if r["unit"] != "jobs/s" or "official" in r["what"]:
            continue
        case = r["what"].split()[1].rstrip(":")
        qbars += [
            (f"{case} ours", r["ours"], {}, "#2a7ab9"),
            (f"{case} ref", r["other"], {}, "#d9822b"),
        ]
    if qbars:
        panels.append(("Queue no-op jobs/s (higher is better, log)", "jobs/s", qbars, True))
    pack = rows_of("pack", "pack")
    pbars = []
    for r in pack:
        if r["unit"] != "s":
            continue
        case = r["what"].removeprefix("pack ").removesuffix(": time")
        pbars += [
            (f"{case} ours", r["ours"], {}, "#2a7ab9"),
            (f"{case} ref", r["other"], {}, "#d9822b"),
        ]
    if pbars:
        panels.append(("flash build time (s, lower is better, log)", "s", pbars, True))
    sizes = sections.get("sizes")
    lines: dict[str, list[tuple[float, float]]] = {}
    if sizes is not None and sizes.data.get("sizes"):
        from .cold_sizes import chart_points

        lines = chart_points(sizes)
    if not panels and not lines:
        return "nothing to chart"

    count = len(panels) + (1 if lines else 0)
    fig, axes = plt.subplots(count, 1, figsize=(10, 3.2 * count), squeeze=False)
    if lines:
        ax = axes[-1, 0]
        colours = {"ours": "#2a7ab9", "reference": "#d9822b", "GNU tar": "#999999"}
        for label, points in lines.items():
            points = sorted(points)
            ax.plot(
                [x for x, _ in points],
                [y for _, y in points],
                marker="o",
                label=label if label != "GNU tar" else "GNU tar xzf alone (ours' artifact)",
                color=colours.get(label),
            )
        ax.set_title("Cold start, first 200 against artifact size (lower is better)", fontsize=10)
        ax.set_xlabel("installed size of the artifact (MB)")
        ax.set_ylabel("s")
        ax.legend(fontsize=8)
    for ax, (title, unit, bars, log_scale) in zip(axes[: len(panels), 0], panels, strict=True):
        labels = [b[0] for b in bars]
        medians = [b[1]["median"] or 0 for b in bars]
        low = [max(0.0, (b[1]["median"] or 0) - (b[1]["min"] or 0)) for b in bars]
        high = [max(0.0, (b[1]["max"] or 0) - (b[1]["median"] or 0)) for b in bars]
        ax.bar(labels, medians, color=[b[3] for b in bars], yerr=[low, high], capsize=3)
        for x, m in enumerate(medians):
            ax.annotate(fmt(m), (x, m), ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        if log_scale:
            ax.set_yscale("log")
        ax.tick_params(axis="x", labelsize=8, rotation=20)
    fig.suptitle(f"flash_runtime vs runpod-flash 1.21.0 — {time.strftime('%Y-%m-%d')}", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
