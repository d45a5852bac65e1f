"""A sync queue function that returns what it is given, to show how outputs are shaped."""

from typing import Any

from runpod_flash import Endpoint


@Endpoint(name="qb-sync", cpu="cpu3c-1-2")
def echo(value: Any = None, times: int = 1) -> Any:
    return value if times == 1 else [value] * times
