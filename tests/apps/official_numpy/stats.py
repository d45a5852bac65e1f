"""A CPU app that needs numpy, which Runpod's CPU images lack: the artifact must bundle it."""

import runpod_flash
from runpod_flash import Endpoint

api = Endpoint(name="stats_api", cpu="cpu3c-1-2", dependencies=["numpy"])


@api.post("/mean")
async def mean(values: list[float]) -> dict:
    import numpy as np

    return {"mean": float(np.mean(values)), "sdk": runpod_flash.__file__}


@Endpoint(name="stats_job", cpu="cpu3c-1-2", dependencies=["numpy"])
def total(values: list[float]) -> dict:
    import numpy as np

    return {"total": float(np.sum(values)), "numpy": np.__version__, "sdk": runpod_flash.__file__}
