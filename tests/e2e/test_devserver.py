"""``flash run`` end to end: the CLI in a subprocess on free ports, the real local platform (in a
temporary FLASH_HOME), real workers; the fixture project (``tests/apps/dev_app``) is copied to a
temporary directory and edited there while the development server runs.

One development server serves the tests of this module in order (reload, broken build, docs,
worker output); the Ctrl-C test runs one of its own next to a ``production`` deploy.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS
from support import FlashCLI

from flash_runtime.testing.net import free_port

FLASH = [sys.executable, "-c", "from flash_runtime.cli import main; main()"]
RELOAD_BOUND_S = 5.0  # the bound: a saved change answers within this
START_TIMEOUT_S = 60.0


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[int, bytes, dict[str, str]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


def call(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    status, raw, _ = http(method, url, body)
    return status, json.loads(raw or b"null")


def until(check: Callable[[], Any], timeout: float) -> Any:
    """``check()``'s first truthy value, waiting at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class Env(FlashCLI):
    """A private platform: FLASH_HOME and FLASH_PLATFORM_URL for every ``flash`` we run."""

    def flash(
        self, *args: str, cwd: Path, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return self.run(*args, cwd=cwd, timeout=timeout)


@dataclass
class DevRun:
    """A running ``flash run`` and its output so far."""

    proc: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30, after: int = 0) -> re.Match[str]:
        """The first output line from index ``after`` on that matches ``pattern``."""
        regex = re.compile(pattern)

        def find() -> re.Match[str] | None:
            for line in self.lines[after:]:
                match = regex.search(line)
                if match:
                    return match
            return None

        found = until(lambda: find() or self.proc.poll() is not None, timeout)
        match = find()
        assert match is not None, f"no {pattern!r} in the output:\n{self.output()}"
        assert found
        return match

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


def start_dev(env: Env, project: Path, *args: str) -> DevRun:
    port = free_port()
    # `flash dev` (runpod-flash's name for `flash run`), its port from FLASH_PORT as there.
    proc = subprocess.Popen(
        [*FLASH, "dev", *args],
        cwd=project,
        env={**env.env, "PYTHONUNBUFFERED": "1", "FLASH_PORT": str(port)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    run = DevRun(proc, f"http://127.0.0.1:{port}")

    def read() -> None:
        assert proc.stdout is not None
        with proc.stdout:  # closed at EOF, when flash run has exited
            for line in proc.stdout:
                run.lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    try:
        run.wait_for(r"watching for changes|--no-reload", START_TIMEOUT_S)
    except AssertionError:
        run.stop()
        raise
    return run


def copy_app(tmp: Path, name: str) -> Path:
    target = tmp / name
    shutil.copytree(
        APPS / "dev_app", target, ignore=shutil.ignore_patterns(".flash", "__pycache__")
    )
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    home = tmp_path_factory.mktemp("dev_home")
    platform = Env(home, home, FLASH_PLATFORM_DRAIN_GRACE_S="5")
    try:
        yield platform
    finally:
        platform.stop()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_app(tmp_path_factory.mktemp("dev"), "devapp")


@pytest.fixture(scope="module")
def dev(env: Env, project: Path) -> Iterator[DevRun]:
    run = start_dev(env, project)
    try:
        yield run
    finally:
        run.stop()


def lb_version(dev: DevRun) -> str | None:
    status, body = call("POST", f"{dev.url}/lb_worker/process", {"text": "x"})
    return body["version"] if status == 200 else None


def qb_version(dev: DevRun) -> str | None:
    status, body = call("POST", f"{dev.url}/gpu_worker/runsync", {"input": {"message": "x"}})
    return body["output"]["version"] if status == 200 and body["status"] == "COMPLETED" else None


def test_serves_every_endpoint_and_reloads_on_save(dev: DevRun, project: Path) -> None:
    assert call("GET", f"{dev.url}/ping") == (200, {"status": "healthy"})
    status, listing = call("GET", f"{dev.url}/")
    assert status == 200 and listing["environment"] == "live"
    by_name = {ep["name"]: ep for ep in listing["endpoints"]}
    assert by_name["gpu_worker"]["endpoint"] == "live-gpu_worker"
    assert "POST /gpu_worker/runsync" in by_name["gpu_worker"]["paths"]
    assert "POST /lb_worker/process" in by_name["lb_worker"]["paths"]

    # A queue function (runsync, then run + status) and load-balanced routes, no key.
    status, job = call(
        "POST", f"{dev.url}/gpu_worker/runsync", {"input": {"message": "ab", "repeat": 2}}
    )
    assert status == 200 and job["status"] == "COMPLETED", job
    assert job["output"] == {"message": "abab", "version": "v1"}
    status, queued = call("POST", f"{dev.url}/gpu_worker/run", {"input": {"message": "q"}})
    assert status == 200
    done = until(
        lambda: (
            (b := call("GET", f"{dev.url}/gpu_worker/status/{queued['id']}")[1])["status"]
            == "COMPLETED"
            and b
        ),
        30,
    )
    assert done["output"]["message"] == "q"
    status, body = call("POST", f"{dev.url}/lb_worker/process", {"text": "hi", "count": 2})
    assert (status, body) == (200, {"text": "hi", "count": 2, "tags": [], "version": "v1"})
    assert call("GET", f"{dev.url}/lb_worker/items/7?verbose=true") == (
        200,
        {"item_id": 7, "verbose": True, "version": "v1"},
    )
    status, body = call("POST", f"{dev.url}/lb_worker/process", {"count": 1})
    assert status == 422 and body["field"] == "text"
    status, raw, headers = http(
        "GET", f"{dev.url}/lb_worker/count?to=2", headers={"Accept": "text/event-stream"}
    )
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert raw.count(b"data:") == 2
    status, body = call("POST", f"{dev.url}/nope/run", {"input": {}})
    assert status == 404 and "gpu_worker" in body["error"]

    # runpod-flash's paths too: /{file, less .py}/runsync and /{file}/{route}.
    assert {"POST /tools/extra/runsync", "GET /tools/extra/hello/{who}"} <= set(
        listing["referencePaths"]
    )
    status, job = call("POST", f"{dev.url}/tools/extra/runsync", {"input": {"text": "hey"}})
    assert status == 200 and job["output"] == "HEY", job
    assert call("GET", f"{dev.url}/tools/extra/hello/ada") == (200, {"hello": "ada"})
    assert call("POST", f"{dev.url}/shouter/runsync", {"input": {"text": "x"}})[1]["output"] == "X"

    # Save a change to each endpoint: the new code answers, flash run still the same process.
    edit(project / "lb_worker.py", 'VERSION = "v1"', 'VERSION = "v2"')
    edit(project / "gpu_worker.py", 'VERSION = "v1"', 'VERSION = "v2"')
    assert until(lambda: lb_version(dev) == "v2", RELOAD_BOUND_S), dev.output()
    assert until(lambda: qb_version(dev) == "v2", RELOAD_BOUND_S), dev.output()
    dev.wait_for(r"changed: rebuilding")
    dev.wait_for(r"new code serving, [\d.]+s after the save")
    assert dev.proc.poll() is None


def test_a_broken_save_keeps_the_last_good_build_serving(dev: DevRun, project: Path) -> None:
    before = len(dev.lines)
    worker = project / "lb_worker.py"
    good = worker.read_text()
    worker.write_text(good.replace('VERSION = "v2"', 'VERSION = "v3"') + "\ndef broken(:\n")
    dev.wait_for(r"build failed; still serving build", after=before)
    dev.wait_for(r"lb_worker\.py:\d+: SyntaxError", after=before)
    assert lb_version(dev) == "v2"

    # A duplicate endpoint name breaks discovery too; then a fix is served again.
    before = len(dev.lines)
    (project / "dup.py").write_text(
        "from runpod_flash import Endpoint\n\n"
        '@Endpoint(name="gpu_worker", cpu="cpu3c-1-2")\n'
        "def other(x: int) -> int:\n    return x\n"
    )
    worker.write_text(good.replace('VERSION = "v2"', 'VERSION = "v3"'))
    dev.wait_for(r"build failed; still serving build", after=before)
    dev.wait_for(r"endpoint 'gpu_worker' is given 2 functions", after=before)
    assert lb_version(dev) == "v2"
    (project / "dup.py").unlink()
    assert until(lambda: lb_version(dev) == "v3", RELOAD_BOUND_S), dev.output()


CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def test_try_it_out_works_in_a_real_browser(dev: DevRun) -> None:
    """Headless Chromium (Debian's, driven by Selenium through chromium-driver) opens /docs,
    runs "Try it out" as it stands on a typed route with a path parameter, a typed POST route
    and a queue function, and sees 200 with each function's result; the page asks nothing of
    any other host."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    assert CHROMIUM.is_file() and CHROMEDRIVER.is_file(), "scripts/test-images installs them"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        wait = WebDriverWait(driver, 60)
        driver.get(f"{dev.url}/docs")
        wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, ".opblock")))

        def try_it(operation: str) -> tuple[str, str]:
            block = driver.find_element(By.ID, f"operations-{operation}")
            block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
            wait.until(lambda _: block.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
            if not block.find_elements(By.CSS_SELECTOR, ".execute"):  # "Try it out" is off
                block.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
            wait.until(lambda _: block.find_elements(By.CSS_SELECTOR, ".execute"))
            block.find_element(By.CSS_SELECTOR, ".execute").click()
            code = wait.until(
                lambda _: block.find_elements(
                    By.CSS_SELECTOR, ".live-responses-table tbody .response-col_status"
                )
            )[0].text.strip()
            body = block.find_element(
                By.CSS_SELECTOR, ".live-responses-table .response-col_description pre"
            ).text
            return code, body

        code, body = try_it("lb_worker-lb_worker__get_item__get")
        assert code == "200" and json.loads(body)["item_id"] == 1, body
        code, body = try_it("lb_worker-lb_worker__process__post")
        assert code == "200" and json.loads(body)["text"] == "text", body
        code, body = try_it("gpu_worker-gpu_worker__runsync")
        job = json.loads(body)
        assert code == "200" and job["status"] == "COMPLETED", body
        assert job["output"]["message"] == "message"

        log: list[dict[str, Any]] = driver.get_log("performance")  # type: ignore[no-untyped-call]
        requested = [
            json.loads(entry["message"])["message"]["params"].get("request", {}).get("url", "")
            for entry in log
            if '"Network.requestWillBeSent"' in entry["message"]
        ]
        assert requested and all(_local(url) or url.startswith("data:") for url in requested), [
            url for url in requested if not _local(url)
        ]
    finally:
        driver.quit()


def test_openapi_documents_typed_routes_and_docs_are_local(dev: DevRun) -> None:
    status, doc = call("GET", f"{dev.url}/openapi.json")
    assert status == 200 and doc["openapi"].startswith("3.1")
    process = doc["paths"]["/lb_worker/process"]["post"]
    assert process["summary"] == "Process a text."
    assert "version of the code" in process["description"]
    body = process["requestBody"]["content"]["application/json"]["schema"]
    assert body["required"] == ["text"] and process["requestBody"]["required"] is True
    assert body["properties"]["text"] == {"type": "string"}
    assert body["properties"]["count"] == {"type": "integer", "default": 1}
    assert {"type": "array", "items": {"type": "string"}} in body["properties"]["tags"]["anyOf"]
    item = doc["paths"]["/lb_worker/items/{item_id}"]["get"]
    params = {p["name"]: p for p in item["parameters"]}
    assert params["item_id"]["in"] == "path" and params["item_id"]["required"] is True
    assert params["item_id"]["schema"] == {"type": "integer"}
    assert params["verbose"]["in"] == "query" and params["verbose"]["required"] is False
    assert params["verbose"]["schema"]["type"] == "boolean"
    runsync = doc["paths"]["/gpu_worker/runsync"]["post"]
    assert runsync["summary"] == "Say hello from the queue worker."
    request = runsync["requestBody"]["content"]["application/json"]["schema"]
    assert request["required"] == ["input"]
    assert request["properties"]["input"]["required"] == ["message"]
    assert "/gpu_worker/status/{job_id}" in doc["paths"]
    # "Try it out" sends what pasted works: path parameters filled in, a queue body built from
    # the function's parameters, and no webhook "string".
    example = runsync["requestBody"]["content"]["application/json"]["example"]
    assert example == {"input": {"message": "message", "repeat": 1}}
    assert params["item_id"]["example"] == 1
    assert process["requestBody"]["content"]["application/json"]["example"] == {
        "text": "text",
        "count": 1,
        "tags": None,
    }

    status, page, headers = http("GET", f"{dev.url}/docs")
    assert status == 200 and headers["content-type"].startswith("text/html")
    html = page.decode()
    assert 'id="swagger-ui"' in html
    external = [u for u in re.findall(r"https?://[^\s\"'<>)]+", html) if not _local(u)]
    assert external == []
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"} <= set(assets)
    for asset in assets:
        if asset.startswith("data:"):
            continue
        assert asset.startswith("/"), asset
        status, content, _ = http("GET", f"{dev.url}{asset}")
        assert status == 200 and content, asset
        text = content.decode(errors="replace")
        if asset.endswith(".css"):  # stylesheets load no remote fonts or images
            assert not re.findall(r"url\(\s*['\"]?https?:", text)
            assert "@import" not in text
        if asset.endswith("init.js"):
            assert "validatorUrl: null" in text  # the online validator badge stays off
            assert not re.findall(r"https?://", text)


def _local(url: str) -> bool:
    return re.match(r"https?://(127\.0\.0\.1|localhost|\[::1\])[:/]", url) is not None


def test_worker_output_reaches_the_terminal_with_request_ids(dev: DevRun) -> None:
    before = len(dev.lines)
    _, _, headers = http("POST", f"{dev.url}/lb_worker/process", {"text": "tagged"})
    request_id = headers["x-request-id"]
    dev.wait_for(rf"^\[lb_worker\] \[{request_id}\] processing 'tagged'", after=before)
    dev.wait_for(rf"POST /lb_worker/process 200 .*request {request_id}", after=before)
    status, job = call("POST", f"{dev.url}/gpu_worker/runsync", {"input": {"message": "loud"}})
    assert status == 200
    dev.wait_for(rf"^\[gpu_worker\] \[{job['id']}\] hello job: loud", after=before)
    dev.wait_for(
        rf"^\[gpu_worker\] \S+Z WARNING dev_app \[{job['id']}\] logged while", after=before
    )
    dev.wait_for(rf"POST /gpu_worker/runsync 200 .*job {job['id']} COMPLETED", after=before)


def test_ctrl_c_deletes_the_live_endpoints_and_leaves_production(env: Env, tmp_path: Path) -> None:
    shop = copy_app(tmp_path, "shop")
    shutil.rmtree(shop / "tools")  # two endpoints are enough here
    deployed = env.flash("deploy", "--json", cwd=shop)
    assert deployed.returncode == 0, deployed.stderr
    production = {ep["resource"]: ep for ep in json.loads(deployed.stdout)["endpoints"]}
    key = json.loads(env.flash("platform", "status", "--json", cwd=shop).stdout)["api_key"]

    run = start_dev(env, shop, "--no-reload")
    status, listing = call("GET", f"{run.url}/")
    live_ids = {ep["id"] for ep in listing["endpoints"]}
    assert live_ids and not live_ids & {ep["id"] for ep in production.values()}
    assert call("POST", f"{run.url}/lb_worker/process", {"text": "live"})[0] == 200

    assert run.stop() == 0
    assert "deleted live-gpu_worker, live-lb_worker" in run.output()
    live = env.flash("env", "get", "live", "--json", cwd=shop)
    assert live.returncode == 0 and json.loads(live.stdout)["endpoints"] == []
    status, raw, _ = http(
        "POST",
        f"{production['lb_worker']['url']}/process",
        {"text": "prod"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert status == 200 and json.loads(raw)["version"] == "v1"
    prod_env = json.loads(env.flash("env", "get", "production", "--json", cwd=shop).stdout)
    assert {ep["resource"] for ep in prod_env["endpoints"]} == {"gpu_worker", "lb_worker"}


def test_requests_from_other_sites_are_refused(dev: DevRun) -> None:
    """F11: the dev server adds the platform key to what it forwards, so a page the developer
    visits must not reach it: a foreign Origin (a cross-site form POST) or Host (DNS
    rebinding) is refused before anything is forwarded."""
    port = dev.url.rsplit(":", 1)[1]
    cross_site = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    status, raw, _ = http("POST", f"{dev.url}/lb_worker/process", None, headers=cross_site)
    assert status == 403 and b"another site" in raw
    status, raw, _ = http("GET", f"{dev.url}/ping", headers={"Host": f"evil.example:{port}"})
    assert status == 403 and b"not this machine" in raw
    assert http("GET", f"{dev.url}/ping", headers={"Origin": "null"})[0] == 403
    same_site = {"Origin": f"http://localhost:{port}", "Host": f"localhost:{port}"}
    assert http("GET", f"{dev.url}/ping", headers=same_site)[0] == 200
