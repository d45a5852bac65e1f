"""What logging costs a load-balanced worker: ``POST /process`` requests per second with request
lines off, on (text, the default) and on as JSON lines (``FLASH_LOG_FORMAT=json``).

``python -m bench.log_cost [--rounds N] [--seconds S]``: the template's ``lb_worker``, one worker
process at ``FLASH_LOG_LEVEL=INFO`` writing to a file (as the local platform's workers do), the
three variants alternating round by round, ``wrk -t1 -c32`` as in ``lb_bench``. Prints medians
and the ratio of each variant to "off" per round pair; writes ``bench/results/log_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from .common import PYTHON, RESULTS, Proc, free_port, server_env, spawn, wait_first_200
from .lb_bench import RESOURCE, wrk

VARIANTS = {
    "off": {"FLASH_LOG_REQUESTS": "0"},
    "text": {},
    "json": {"FLASH_LOG_FORMAT": "json"},
}


def _launch(logs: Path, artifact: Path, app_dir: Path, extra: dict[str, str], port: int) -> Proc:
    env = server_env(
        {
            "FLASH_BUILD_ARTIFACT_PATH": str(artifact),
            "FLASH_APP_DIR": str(app_dir),
            "FLASH_RESOURCE_NAME": RESOURCE,
            "FLASH_ENDPOINT_TYPE": "lb",
            "FLASH_HOST": "127.0.0.1",
            "PORT": str(port),
            "FLASH_LOG_LEVEL": "INFO",
            "RUNPOD_ENDPOINT_ID": "bench-logs",
            "RUNPOD_POD_ID": "bench-worker",
            **extra,
        }
    )
    return spawn("ours-lb", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs, port=port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    from flash_runtime.pack import build
    from flash_runtime.pack.scaffold import init_project

    work = Path(tempfile.mkdtemp(prefix="flash-bench-logs-"))
    artifact = build(init_project(work / "hello")).artifact
    app_dir = work / "app"
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, extra in VARIANTS.items():
            proc = _launch(work / "logs", artifact, app_dir, extra, free_port())
            try:
                wait_first_200(proc)
                assert proc.port is not None
                wrk(proc.port, 1, 32)  # warm-up
                results[name].append(wrk(proc.port, args.seconds, 32)["requests_per_s"])
            finally:
                proc.stop()
    out: dict[str, Any] = {"rounds": args.rounds, "seconds": args.seconds, "variants": {}}
    for name, values in results.items():
        ratios = [v / off for v, off in zip(values, results["off"], strict=True)]
        out["variants"][name] = {
            "requests_per_s": values,
            "median": statistics.median(values),
            "ratio_to_off": ratios,
            "median_ratio": statistics.median(ratios),
        }
        print(f"{name:5} {statistics.median(values):8.0f} req/s  [{min(values):.0f}-{max(values):.0f}]"
              f"  vs off: {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]")  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "log_cost.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
