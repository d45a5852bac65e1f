"""Observability end to end: one request id followed across endpoints, ``flash logs`` (exact
selection, ``--request``, ``--follow``, ``--json``), JSON worker logs, and ``/metrics``.

The ``traced`` app: a route (text logs) that calls a queue function on another endpoint (JSON
logs, ``FLASH_LOG_FORMAT=json`` in its env). Deployed with ``flash deploy`` to two environments.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS
from prometheus_client.parser import text_string_to_metric_families
from support import FLASH, FlashCLI, request


@pytest.fixture(scope="module")
def shop(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[FlashCLI, dict[str, dict[str, Any]], str]]:
    """One platform for the module's tests (each counts what it adds)."""
    tmp_path = tmp_path_factory.mktemp("observability")
    project = tmp_path / "shop"
    shutil.copytree(APPS / "traced", project)
    cli = FlashCLI(tmp_path / "flash_home", project)
    try:
        production = json.loads(cli("deploy", "--json"))
        json.loads(cli("deploy", "--json", "--env", "dev"))
        key = str(cli.status()["api_key"])
        yield cli, {ep["resource"]: ep for ep in production["endpoints"]}, key
    finally:
        cli.stop()


def order(url: str, key: str, item: str, request_id: str | None = None) -> tuple[int, Any, str]:
    import urllib.request

    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    if request_id:
        headers["X-Request-ID"] = request_id
    sent = urllib.request.Request(
        f"{url}/order", data=json.dumps({"item": item}).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(sent, timeout=60) as response:
            return response.status, json.loads(response.read()), response.headers["X-Request-ID"]
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers["X-Request-ID"]


def log_lines(cli: FlashCLI, *args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in cli("logs", "--json", *args).splitlines() if line]


def eventually(check: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_one_request_id_across_endpoints(shop: Any) -> None:
    cli, endpoints, key = shop
    status, body, echoed = order(endpoints["storefront"]["url"], key, "book", "trace-7f3a")
    assert status == 200 and body["packed"] == {"box": "BOOK"}, body
    assert echoed == "trace-7f3a"

    def traced() -> list[dict[str, Any]]:
        lines = log_lines(cli, "--request", "trace-7f3a")
        both = {e["name"] for e in lines} == {"storefront", "packer", "pricing"}
        paths = {e["message"].split()[1] for e in lines if e["message"].startswith("POST")}
        request_line = paths == {"/order", "/price"}
        return lines if both and request_line else []  # request lines are written in batches

    lines = eventually(traced)
    assert lines, log_lines(cli)
    names = ("storefront", "packer", "pricing")
    by_name = {name: [e for e in lines if e["name"] == name] for name in names}
    messages = [e["message"] for e in by_name["storefront"]]
    assert "ordering book" in messages, messages
    assert any(m.startswith("POST /order 200 ") for m in messages), messages  # request line
    packer = by_name["packer"]
    assert {"packing book", "boxed book"} <= {e["message"] for e in packer}, packer
    assert all(e["request_id"] == "trace-7f3a" and e.get("job_id") for e in packer)
    assert all(e["endpoint"] == endpoints["packer"]["id"] for e in packer)
    pricing = {e["message"] for e in by_name["pricing"]}  # the LB target of the same request
    assert "pricing book" in pricing and any(m.startswith("POST /price 200") for m in pricing)
    # The job of the request carries it in its metadata.
    job_id = packer[0]["job_id"]
    status_url = f"{cli.url}/v2/{endpoints['packer']['id']}/status/{job_id}"
    assert request("GET", status_url, key)[1]["requestId"] == "trace-7f3a"

    # The packer's own log file holds JSON lines (FLASH_LOG_FORMAT=json in its env).
    home = cli.home / "platform" / "logs" / endpoints["packer"]["id"]
    raw = [json.loads(line) for path in home.glob("*.log") for line in path.read_text().splitlines()
           if line.startswith("{")]  # fmt: skip
    job_line = next(e for e in raw if e.get("message") == "packing book")
    assert job_line["level"] == "INFO" and job_line["logger"] == "packer"
    assert job_line["request_id"] == "trace-7f3a" and job_line["worker"]

    # The platform serves the same (with its key), with a cursor to follow from.
    query = f"{cli.url}/platform/logs?endpoint={endpoints['packer']['id']}&request=trace-7f3a"
    assert request("GET", query, "wrong")[0] == 401
    status, served = request("GET", query, key)
    assert status == 200 and {e["message"] for e in served["lines"]} >= {"packing book"}
    assert served["cursor"]
    status, bad = request("GET", f"{query}&tail=lots", key)
    assert status == 400, bad

    # Text output: time, endpoint/worker, ids.
    text = cli("logs", "--request", "trace-7f3a")
    assert "storefront/" in text and "packer/" in text and "request_id=trace-7f3a" in text


def test_selection_is_exact_and_tail_and_errors(shop: Any) -> None:
    cli, endpoints, key = shop
    order(endpoints["storefront"]["url"], key, "pen")
    eventually(lambda: log_lines(cli, "storefront", "--request", "nothing") == [] and
               any(e["message"] == "ordering pen" for e in log_lines(cli, "storefront")))  # fmt: skip
    production = log_lines(cli, "storefront")
    assert production and {e["endpoint"] for e in production} == {endpoints["storefront"]["id"]}
    dev = log_lines(cli, "storefront", "--env", "dev")
    assert dev and endpoints["storefront"]["id"] not in {e["endpoint"] for e in dev}
    assert not any(e["message"] == "ordering pen" for e in dev)
    assert cli("logs", "storefront", "-n", "0") == ""
    assert len(log_lines(cli, "storefront", "-n", "2")) == 2
    missing = cli.run("logs", "storefront", "--app", "elsewhere")
    assert missing.returncode != 0 and "shop/production" in missing.stderr, missing.stderr
    assert log_lines(cli, "storefront", "--worker", "nosuchworker") == []
    worker = production[-1]["worker"]
    assert {e["worker"] for e in log_lines(cli, "storefront", "--worker", worker)} == {worker}
    assert log_lines(cli, "storefront", "--since", "1h")
    assert log_lines(cli, "storefront", "--since", "2099-01-01T00:00:00") == []
    assert cli.run("logs", "storefront", "--since", "yesterday").returncode != 0


def test_follow_sees_a_new_line_within_a_second(shop: Any) -> None:
    cli, endpoints, key = shop
    follower = subprocess.Popen(
        [*FLASH, "logs", "storefront", "--follow", "--json", "-n", "0"],
        cwd=cli.project,
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        time.sleep(1.0)  # following
        assert follower.stdout is not None
        sent = time.monotonic()
        status, _, _ = order(endpoints["storefront"]["url"], key, "lamp", "follow-1")
        assert status == 200
        while True:
            entry = json.loads(follower.stdout.readline())
            if entry.get("request_id") == "follow-1" and entry["message"].startswith("POST"):
                break
        seen = time.monotonic() - sent
        print(f"\nflash logs --follow: the request line after {seen:.2f}s")
        assert seen < 1.0
    finally:
        follower.terminate()
        follower.communicate(timeout=10)


def test_metrics_count_what_ran(shop: Any) -> None:
    cli, endpoints, key = shop
    assert request("GET", f"{cli.url}/metrics", "wrong")[0] == 401
    import urllib.request

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        headers = {"Authorization": f"Bearer {key}"}
        sent = urllib.request.Request(f"{cli.url}/metrics", headers=headers)
        with urllib.request.urlopen(sent, timeout=10) as response:
            text = response.read().decode()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def value(samples: Any, name: str, endpoint: str, **labels: str) -> float:
        key_labels = {"endpoint": endpoints[endpoint]["id"], "name": endpoint, **labels}
        return float(samples.get((name, tuple(sorted(key_labels.items()))), 0.0))

    counted = [
        ("flash_jobs_submitted_total", "packer", {}, 3),
        ("flash_jobs_finished_total", "packer", {"status": "COMPLETED"}, 2),
        ("flash_jobs_finished_total", "packer", {"status": "FAILED"}, 1),
        ("flash_job_execution_seconds_count", "packer", {}, 3),
        ("flash_job_queue_seconds_count", "packer", {}, 3),
        ("flash_lb_requests_total", "storefront", {"status": "200"}, 2),
        ("flash_lb_requests_total", "storefront", {"status": "500"}, 1),
        ("flash_lb_requests_total", "pricing", {"status": "200"}, 2),
        ("flash_lb_request_seconds_count", "storefront", {}, 3),
    ]
    before = scrape()
    for item in ("a", "b", "broken"):
        order(endpoints["storefront"]["url"], key, item)
    after = scrape()
    for name, endpoint, labels, added in counted:
        grew = value(after, name, endpoint, **labels) - value(before, name, endpoint, **labels)
        assert grew == added, (name, endpoint, labels, grew)
    assert value(after, "flash_jobs_queued", "packer") == 0
    assert value(after, "flash_workers", "packer", state="ready") == 1
    completed = int(value(after, "flash_jobs_finished_total", "packer", status="COMPLETED"))
    requests = sum(
        value(after, "flash_lb_requests_total", "storefront", status=s) for s in ("200", "500")
    )
    status = cli("platform", "status")
    assert f"jobs {completed} completed, 1 failed" in status, status
    assert f"{int(requests)} LB requests (1 5xx)" in status, status


def test_the_platform_logs_json_lines_too(tmp_path: Path) -> None:
    cli = FlashCLI(tmp_path / "flash_home", tmp_path, FLASH_LOG_FORMAT="json")
    try:
        cli("platform", "start")
        cli.status()
    finally:
        cli.stop()
    log = (tmp_path / "flash_home" / "platform" / "logs" / "platform.log").read_text()
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
