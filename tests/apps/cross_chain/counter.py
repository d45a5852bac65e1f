"""A class endpoint: other endpoints call its methods through ``Counter().method(...)``."""

from runpod_flash import Endpoint


@Endpoint(name="counter", cpu="cpu3c-1-2", workers=(0, 1))
class Counter:
    def __init__(self) -> None:
        self.total = 0

    def add(self, k: int) -> int:
        self.total += k
        return self.total
