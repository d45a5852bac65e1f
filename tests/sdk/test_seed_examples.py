"""The examples of the product documentation (shared/seeds) import and work as written."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import APPS

PROBE = """
import asyncio, importlib, json, os, sys
os.environ["FLASH_CALLS"] = "local"  # run them here: nothing is deployed
sys.path.insert(0, sys.argv[1])
from flash_runtime.endpoint import registered_endpoints
for name in sys.argv[2:]:
    importlib.import_module(name)
import load_balanced, queue_based
out = {e.name: {"kind": e.kind, "routes": [r.key for r in e.routes], "cfg": e.deploy_config()}
       for e in registered_endpoints()}
async def calls():
    return [await load_balanced.generate_text("hi"), await queue_based.preprocess({"x": 1})]
out["calls"] = asyncio.run(calls())
print(json.dumps(out))
"""


def test_seed_examples_import_and_register() -> None:
    modules = ["develop", "queue_based", "load_balanced", "fetch_data"]
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(APPS / "seed_examples"), *modules],
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(proc.stdout)
    assert found["inference-worker"]["kind"] == "qb"
    assert found["inference-worker"]["cfg"]["workersMax"] == 3
    assert found["inference-worker"]["cfg"]["dependencies"] == ["torch"]
    assert found["preprocess"]["kind"] == found["inference"]["kind"] == "qb"
    assert found["api-server"]["routes"] == ["POST /generate", "POST /translate", "GET /health"]
    assert found["api-server"]["cfg"]["instanceIds"] == ["cpu5c-4-8"]
    assert (found["api-server"]["cfg"]["workersMin"], found["api-server"]["cfg"]["workersMax"]) == (
        1,
        5,
    )
    assert found["fetch-data"]["cfg"]["gpuIds"].startswith("ADA_24")
    # With FLASH_CALLS=local a decorated function runs here; `...` bodies return None.
    assert found["calls"] == [None, None]
