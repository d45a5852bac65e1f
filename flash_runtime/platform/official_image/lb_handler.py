"""The load-balanced official image's entry: ``uvicorn lb_handler:app --host ... --port ...``."""

from __future__ import annotations

import os

import _contract
from fastapi import FastAPI

if _contract.deployed():
    _contract.extract()
# The image imports the reference SDK it finds (its own, preinstalled) before the entry file.
import runpod_flash.protos.remote_execution  # noqa: F401

if os.environ.get("FLASH_ENDPOINT_TYPE") != "lb":
    raise SystemExit("only FLASH_ENDPOINT_TYPE=lb loads the entry file")
app = _contract.load_entry("user_main").app
if not isinstance(app, FastAPI):
    raise TypeError(f"expected a FastAPI instance, got {type(app).__name__}")


@app.get("/ping")
async def ping() -> dict[str, str]:
    return {"status": "healthy"}
