"""The platform's metrics, in Prometheus' text format (``GET /metrics``, with the platform key).

Per endpoint (labels ``endpoint``: its id, ``name``):

================================== ========= ===================================================
``flash_jobs_submitted_total``     counter   jobs accepted (``/run``, ``/runsync``)
``flash_jobs_finished_total``      counter   jobs ended, by ``status`` (COMPLETED, FAILED, ...)
``flash_jobs_queued``              gauge     jobs waiting for a worker now
``flash_jobs_running``             gauge     jobs a worker holds now
``flash_job_queue_seconds``        histogram time from submit to a worker taking the job
``flash_job_execution_seconds``    histogram time from a worker taking the job to its result
``flash_workers``                  gauge     workers by ``state`` (starting, ready, draining)
``flash_worker_restarts_total``    counter   workers that ended unasked (crashed, failed to boot)
``flash_lb_requests_total``        counter   load-balanced requests, by ``status``
``flash_lb_request_seconds``       histogram load-balanced requests' time to the response's head
================================== ========= ===================================================

Counters start at zero with each platform start, as a scraper expects of a process. The text is
written here directly: the client library would cost the platform 75 ms of import for what is a
few counters (the tests read it back with that library's parser).
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

Labels = tuple[tuple[str, str], ...]


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
    total: int = 0
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(BUCKETS, seconds)
        if index < len(BUCKETS):
            self.counts[index] += 1
        self.total += 1
        self.sum += seconds


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels) + "}" if labels else ""


class Metrics:
    """The counters and histograms the runtime and the balancers update."""

    HELP = {
        "flash_jobs_submitted_total": ("counter", "Jobs accepted."),
        "flash_jobs_finished_total": ("counter", "Jobs ended, by status."),
        "flash_job_queue_seconds": ("histogram", "Seconds from submit to a worker taking the job."),
        "flash_job_execution_seconds": ("histogram", "Seconds from a worker taking the job to its result."),
        "flash_worker_restarts_total": ("counter", "Workers that ended unasked (crash, failed boot)."),
        "flash_lb_requests_total": ("counter", "Load-balanced requests, by status."),
        "flash_lb_request_seconds": ("histogram", "Seconds of load-balanced requests to the response head."),
    }  # fmt: skip

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self.histograms: dict[str, dict[Labels, Histogram]] = defaultdict(
            lambda: defaultdict(Histogram)
        )

    def count(self, name: str, labels: Labels, value: float = 1.0) -> None:
        self.counters[name][labels] += value

    def observe(self, name: str, labels: Labels, seconds: float) -> None:
        self.histograms[name][labels].observe(max(0.0, seconds))

    def value(self, name: str, labels: Labels) -> float:
        return self.counters.get(name, {}).get(labels, 0.0)

    def by(self, name: str, labels: Labels, key: str) -> dict[str, float]:
        """A counter's values for ``labels``, split by the label ``key``."""
        out: dict[str, float] = {}
        for have, value in self.counters.get(name, {}).items():
            if have[: len(labels)] == labels:
                split = dict(have[len(labels) :]).get(key)
                if split is not None:
                    out[split] = out.get(split, 0.0) + value
        return out

    def render(self, gauges: Iterable[tuple[str, str, str, Labels, float]]) -> str:
        """The text format: the counters and histograms, then ``gauges`` (name, type, help,
        labels, value) as they are now."""
        out: list[str] = []
        for name, (kind, text) in self.HELP.items():
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            if kind == "counter":
                for labels, value in sorted(self.counters.get(name, {}).items()):
                    out.append(f"{name}{_labels(labels)} {value:g}")
                continue
            for labels, hist in sorted(self.histograms.get(name, {}).items()):
                running = 0
                for bound, count in zip(BUCKETS, hist.counts, strict=True):
                    running += count
                    out.append(f"{name}_bucket{_labels((*labels, ('le', f'{bound:g}')))} {running}")
                out.append(f"{name}_bucket{_labels((*labels, ('le', '+Inf')))} {hist.total}")
                out.append(f"{name}_sum{_labels(labels)} {hist.sum:.6f}")
                out.append(f"{name}_count{_labels(labels)} {hist.total}")
        seen: set[str] = set()
        for name, kind, text, labels, value in sorted(gauges, key=lambda g: g[0]):
            if name not in seen:
                seen.add(name)
                out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            out.append(f"{name}{_labels(labels)} {value:g}")
        return "\n".join(out) + "\n"
