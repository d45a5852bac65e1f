"""The README's first command: deploy the example app to the local platform and call it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
FLASH = str(Path(sys.executable).with_name("flash"))


def flash(*args: str, cwd: Path = ROOT) -> str:
    print(f"$ flash {' '.join(args)}", flush=True)
    done = subprocess.run([FLASH, *args], cwd=cwd, stdout=subprocess.PIPE, text=True, check=True)
    return done.stdout


def main() -> int:
    keep = "--keep" in sys.argv[1:]
    os.environ.setdefault("FLASH_HOME", str(DEMO / "flash_home"))
    os.environ.setdefault("FLASH_PLATFORM_URL", "http://127.0.0.1:8765")
    project = DEMO / "hello"
    shutil.rmtree(project, ignore_errors=True)
    DEMO.mkdir(exist_ok=True)
    flash("init", str(project))
    started = time.perf_counter()
    deployed = json.loads(flash("deploy", "--json", cwd=project))
    key = json.loads(flash("platform", "status", "--json"))["api_key"]
    by_resource = {e["resource"]: e for e in deployed["endpoints"]}
    try:
        lb = by_resource["lb_worker"]["url"]
        body = json.dumps({"input_data": {"hello": "world"}}).encode()
        request = urllib.request.Request(
            f"{lb}/process",
            data=body,
            method="POST",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            print(f"POST {lb}/process ->", response.status, response.read().decode())

        import runpod  # the official client, pointed at the local platform

        runpod.api_key = key
        runpod.endpoint_url_base = os.environ["FLASH_PLATFORM_URL"] + "/v2"
        queue = runpod.Endpoint(by_resource["cpu_worker"]["id"])
        output = queue.run_sync({"input_data": {"text": "to be or not to be"}}, timeout=120)
        print(f"runpod.Endpoint({queue.endpoint_id!r}).run_sync(...) ->", json.dumps(output))
        print(f"deploy to both answers: {time.perf_counter() - started:.2f}s")
    finally:
        if keep:
            print("The platform keeps running: `flash platform status`, `flash platform stop`.")
        else:
            flash("platform", "stop")
    return 0


if __name__ == "__main__":
    sys.exit(main())
