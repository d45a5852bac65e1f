"""A queue-based CPU endpoint: one function, called through /run (async) or /runsync.

`python cpu_worker.py` runs the function on a worker, as a script of the deployed app would (the
first run deploys the project to its `live` environment); `FLASH_CALLS=local python cpu_worker.py`
runs it on this machine. Deploy it with `flash deploy`.
"""

from runpod_flash import CpuInstanceType, Endpoint


@Endpoint(name="cpu_worker", cpu=CpuInstanceType.CPU3C_1_2, workers=2)
def cpu_hello(input_data: dict) -> dict:
    """Count the words of a text; plain `def` functions run in a worker thread."""
    import platform
    from collections import Counter

    text = str(input_data.get("text", "the quick brown fox jumps over the lazy dog the end"))
    words = Counter(text.lower().split())
    return {
        "words": sum(words.values()),
        "most_common": words.most_common(3),
        "machine": platform.machine(),
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    import asyncio

    # Called from a script, even a plain `def` is awaited: it runs on a worker.
    print(asyncio.run(cpu_hello({"text": "to be or not to be"})))
