"""The queue-based official image's entry: ``python handler.py``."""

from __future__ import annotations

import _contract

if not _contract.deployed():
    raise SystemExit("not a Flash deployment (the image would serve Live Serverless requests)")
_contract.extract()
handler = _contract.load_entry(f"handler_{__import__('os').environ['FLASH_RESOURCE_NAME']}").handler
if not callable(handler):
    raise RuntimeError("the entry file's handler is not callable")

if __name__ == "__main__":
    import runpod

    runpod.serverless.start({"handler": handler})
