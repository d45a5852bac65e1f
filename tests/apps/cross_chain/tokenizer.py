"""A plain ``def`` queue-based function: its callers on other endpoints await it all the same."""

from runpod_flash import Endpoint


@Endpoint(name="tokenizer", cpu="cpu3c-1-2", workers=(0, 1))
def tokenize(text: str, lower: bool = False) -> list[str]:
    return (text.lower() if lower else text).split()


@Endpoint(name="fail", cpu="cpu3c-1-2", workers=(0, 1))
def explode(reason: str) -> None:
    raise ValueError(reason)
