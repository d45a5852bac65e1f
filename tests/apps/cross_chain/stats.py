"""A load-balanced endpoint whose routes other endpoints call: a POST (JSON body) and a GET
(query string and a path parameter)."""

from runpod_flash import Endpoint

stats = Endpoint(name="stats", cpu="cpu3c-1-2", workers=(0, 1))


@stats.post("/count")
def count(tokens: list[str]) -> dict:
    counts: dict[str, int] = {}
    for token in tokens:
        counts[token] = counts.get(token, 0) + 1
    return counts


@stats.get("/echo/{word}")
def echo(word: str, times: int = 1) -> dict:
    return {"echo": " ".join([word] * times)}
