import flash_test_missing_heavy_lib  # a heavy package imported at the top: the documented mistake

from runpod_flash import Endpoint


@Endpoint(name="worker", cpu="cpu3c-1-2")
def run(x: int) -> int:
    return flash_test_missing_heavy_lib.double(x)
