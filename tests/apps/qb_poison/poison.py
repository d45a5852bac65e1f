"""A queue endpoint where one input kills the worker running it (a poison job)."""

import os

from runpod_flash import Endpoint


@Endpoint(name="qb-poison", cpu="cpu3c-1-2")
def run(die: bool = False, tag: str = "") -> dict:
    if die:
        os._exit(3)
    return {"tag": tag}
