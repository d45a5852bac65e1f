"""A queue-based CPU endpoint: one function, called through /run (async) or /runsync.

Try it locally with `python cpu_worker.py`; deploy it with `flash deploy`.
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
    print(cpu_hello({"text": "to be or not to be"}))
