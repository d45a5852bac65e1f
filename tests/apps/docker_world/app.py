"""Workers as containers of their image: a route, a queue function with a system package, a
package the image lacks, and the network volume."""

import json
import os
import subprocess
from pathlib import Path

from runpod_flash import Endpoint, NetworkVolume

api = Endpoint(name="api", cpu="cpu3c-1-2")


@api.post("/mean")
async def mean(values: list[float]) -> dict:
    import numpy  # preinstalled in our CPU image

    return {"mean": float(numpy.mean(values)), "pid": os.getpid()}


@Endpoint(
    name="tools",
    cpu="cpu3c-1-2",
    system_dependencies=["jq"],
    volume=NetworkVolume(name="tools-data", size=10),
)
def tools(text: str = "", write: str = "") -> dict:
    import time

    if text == "slow":
        time.sleep(3)
    document = json.dumps({"a": text})
    done = subprocess.run(["jq", "-r", ".a"], input=document, capture_output=True, text=True)
    volume = Path(os.environ["RUNPOD_VOLUME_PATH"])
    if write:
        (volume / "note.txt").write_text(write)
    note = volume / "note.txt"
    return {
        "jq": done.stdout.strip(),
        "volume": str(volume),
        "note": note.read_text() if note.exists() else None,
        "hostname": os.environ.get("RUNPOD_POD_ID"),
    }


@Endpoint(name="undeclared", cpu="cpu3c-1-2")
def undeclared() -> str:
    import graphql  # the CLI's environment has graphql-core; the image does not

    return str(graphql.__name__)
