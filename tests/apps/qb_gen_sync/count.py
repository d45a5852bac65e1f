"""A sync generator: its chunks are streamed; ``fail_at`` raises before that chunk."""

from collections.abc import Iterator

from runpod_flash import Endpoint


@Endpoint(name="qb-gen-sync", cpu="cpu3c-1-2")
def count(n: int, fail_at: int = -1) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"failed at {i}")
        yield i
