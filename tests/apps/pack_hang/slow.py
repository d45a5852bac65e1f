import time

from runpod_flash import Endpoint

time.sleep(60)  # e.g. loading a model at import time


@Endpoint(name="slow", cpu="cpu3c-1-2")
def run() -> None:
    return None
