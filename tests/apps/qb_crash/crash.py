"""A function that raises: its job gets an error result and the worker keeps serving."""

from runpod_flash import Endpoint


@Endpoint(name="qb-crash", cpu="cpu3c-1-2")
def crash(message: str = "boom") -> None:
    raise RuntimeError(message)
