"""Reading worker log lines back (``platform/logs.py``): every form a worker's log holds gets
its time, level, logger and ids."""

from __future__ import annotations

import json

from flash_runtime.platform.logs import Endpoint, epoch, parse

QUEUE = Endpoint("ep1", "packer", "qb")
ROUTE = Endpoint("ep2", "api", "lb")


def test_record_lines() -> None:
    line = "2026-12-01T14:00:00.123Z WARNING shop [job-1 trace-9] low stock"
    entry = parse(line, QUEUE, "w1", None)
    assert entry["time"] == "2026-12-01T14:00:00.123Z" and entry["level"] == "WARNING"
    assert entry["logger"] == "shop" and entry["message"] == "low stock"
    assert entry["job_id"] == "job-1" and entry["request_id"] == "trace-9"
    assert parse(line.replace("[job-1 trace-9] ", ""), QUEUE, "w1", None).get("job_id") is None
    routed = parse("2026-12-01T14:00:00.123Z INFO flash_runtime.access [r1] GET / 200 1.0ms",
                   ROUTE, "w2", None)  # fmt: skip
    assert routed["request_id"] == "r1" and routed["message"] == "GET / 200 1.0ms"


def test_prints_platform_lines_and_json() -> None:
    printed = parse("[r7] hello", ROUTE, "w2", "2026-12-01T14:00:01.000Z")
    assert printed["request_id"] == "r7" and printed["message"] == "hello"
    assert printed["time"] == "2026-12-01T14:00:01.000Z"  # the line before's
    plain = parse("Traceback (most recent call last):", ROUTE, "w2", None)
    assert plain["message"].startswith("Traceback") and plain["time"] is None
    platform = parse("2026-12-01T14:00:00.000Z [flash platform] worker w2 exited with code 0",
                     ROUTE, "w2", None)  # fmt: skip
    assert platform["logger"] == "flash.platform" and platform["message"].startswith("worker")
    data = {"time": "2026-12-01T14:00:02.500Z", "level": "ERROR", "logger": "packer",
            "message": "failed", "job_id": "j", "request_id": "r", "exception": "ValueError: x"}  # fmt: skip
    entry = parse(json.dumps(data), QUEUE, "w1", None)
    assert entry["job_id"] == "j" and entry["request_id"] == "r" and entry["level"] == "ERROR"
    assert entry["message"] == "failed\nValueError: x"
    assert epoch("2026-12-01T14:00:02.500Z") == 1796133602.5
