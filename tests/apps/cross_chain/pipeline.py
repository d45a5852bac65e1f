"""A queue-based function that calls other endpoints: a plain ``def`` queue function, the routes
of a load-balanced endpoint, and (through a helper module) a class endpoint."""

import sys

import helpers
from stats import count, echo
from tokenizer import tokenize

from runpod_flash import Endpoint


@Endpoint(name="pipeline", cpu="cpu3c-1-2", workers=(0, 1))
async def pipeline(text: str) -> dict:
    tokens = await tokenize(text, lower=True)  # positional and keyword arguments
    return {
        "tokens": tokens,
        "counts": await count(tokens),
        "echo": await echo("hi", times=2),
        "tally": await helpers.tally(len(tokens)),
        "client_loaded": "flash_runtime.calls.client" in sys.modules,
    }
