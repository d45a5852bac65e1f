from runpod_flash import Endpoint

ep = Endpoint(name="broken", cpu="cpu3c-1-2")


@ep.post("/a")
def a() -> None:
    return None


@ep.post("/a")
def b() -> None:
    return None
