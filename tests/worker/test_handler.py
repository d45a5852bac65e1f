"""The queue handler in-process: arguments, method selection, and result shapes.

Result shapes are checked against the official SDK itself: the same job goes through our
``Handler.result`` and through ``runpod``'s own ``run_job`` (or ``run_job_generator``) with our
handler function, and the two must agree (tracebacks aside, which name different frames).
"""

from __future__ import annotations

import asyncio
import copy
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.to_thread
import pytest

from flash_runtime.testing.jobserver import load_queue_resource
from flash_runtime.worker.handler import Handler, error_result, output_result

pytestmark = pytest.mark.anyio

# -- the functions under test (undecorated: the loader needs only the module and the name) --


async def greet(name: str, excited: bool = False) -> str:
    return f"hello {name}{'!' if excited else ''}"


def echo(value: Any = None, times: int = 1) -> Any:
    return value if times == 1 else [value] * times


def where() -> dict[str, Any]:
    return {"thread": threading.get_ident()}


def crash(message: str = "boom") -> None:
    raise RuntimeError(message)


def count(n: int, fail_at: int = -1) -> Iterator[int]:
    for i in range(n):
        if i == fail_at:
            raise ValueError(f"failed at {i}")
        yield i


async def acount(n: int, error_at: int = -1) -> AsyncIterator[Any]:
    for i in range(n):
        await asyncio.sleep(0)
        yield {"error": f"chunk {i} is bad"} if i == error_at else i


class Text:
    created = 0

    def __init__(self) -> None:
        Text.created += 1

    def upper(self, text: str) -> str:
        return text.upper()

    async def lower(self, text: str) -> str:
        return text.lower()


class OneMethod:
    def shout(self, text: str) -> str:
        return text.upper() + "!"


class Mixed:
    def plain(self) -> str:
        return "plain"

    def chunks(self, n: int) -> Iterator[int]:
        yield from range(n)


def handler_for(name: str, *, max_concurrency: int = 1) -> Handler:
    target = globals()[name]
    loaded = load_queue_resource(
        __name__, name, max_concurrency=max_concurrency, is_class=isinstance(target, type)
    )
    return Handler(loaded)


def job(job_input: Any, job_id: str = "job-1") -> dict[str, Any]:
    return {"id": job_id, "input": job_input}


async def official(handler: Handler, the_job: dict[str, Any]) -> dict[str, Any]:
    """What runpod 1.12's own run_job makes of the same job with our handler function."""
    from runpod.serverless.modules.rp_job import run_job

    result: dict[str, Any] = await run_job(handler.runpod_handler, copy.deepcopy(the_job))
    return result


def without_traceback(result: dict[str, Any]) -> dict[str, Any]:
    """The error's fields but its traceback: a function's own error has one; an input error
    (InvalidArguments) has none, in either loop (our internals are nobody's business)."""
    info: dict[str, Any] = json.loads(result["error"])
    tb = info.pop("error_traceback")
    if "InvalidArguments" in info["error_type"]:
        assert tb == ""
    else:
        assert "Traceback (most recent call last)" in tb
    return info


# -- arguments and dispatch ------------------------------------------------------------------


async def test_input_fields_are_keyword_arguments() -> None:
    handler = handler_for("greet")
    result = await handler.result(job({"name": "ada", "excited": True, "__empty": True}))
    assert result == {"output": "hello ada!"}


async def test_sync_functions_run_in_a_worker_thread() -> None:
    handler = handler_for("where")
    result = await handler.result(job({}))
    assert result["output"]["thread"] != threading.get_ident()


async def test_thread_pool_is_at_least_max_concurrency() -> None:
    handler = handler_for("where", max_concurrency=64)
    await handler.result(job({}))
    assert anyio.to_thread.current_default_thread_limiter().total_tokens >= 64


async def test_class_endpoint_selects_method_and_is_instantiated_once() -> None:
    before = Text.created
    handler = handler_for("Text")
    assert Text.created == before + 1
    assert await handler.result(job({"method": "upper", "text": "Ab"})) == {"output": "AB"}
    assert await handler.result(job({"method": "lower", "text": "Ab"})) == {"output": "ab"}
    assert Text.created == before + 1


async def test_class_with_one_method_needs_no_method() -> None:
    handler = handler_for("OneMethod")
    assert await handler.result(job({"text": "hi"})) == {"output": "HI!"}


# -- result shapes, against the official SDK ---------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        {"a": 1},
        {"a": 1, "error": "soft failure"},
        {"a": 1, "refresh_worker": True},
        {"error": "only an error"},
        {},
        None,
        True,
        0,
        "text",
        [1, "two", {"three": 3}],
    ],
    ids=repr,
)
async def test_output_shapes_match_the_official_sdk(value: Any) -> None:
    handler = handler_for("echo")
    the_job = job({"value": value})
    ours = await handler.result(copy.deepcopy(the_job))
    assert ours == await official(handler, the_job)
    assert ours == output_result(copy.deepcopy(value))


@pytest.mark.parametrize(
    ("name", "job_input", "error_type", "message_has"),
    [
        ("crash", {"message": "kaput"}, "<class 'RuntimeError'>", "kaput"),
        (
            "echo",
            {"times": "three"},
            "<class 'flash_runtime.worker.arguments.InvalidArguments'>",
            "$.times",
        ),
        (
            "greet",
            {},
            "<class 'flash_runtime.worker.arguments.InvalidArguments'>",
            "missing required field `name`",
        ),
        (
            "greet",
            ["ada"],
            "<class 'flash_runtime.worker.arguments.InvalidArguments'>",
            "job input must be a JSON object",
        ),
        (
            "Text",
            {"method": "title", "text": "x"},
            "<class 'flash_runtime.worker.arguments.InvalidArguments'>",
            "no public method 'title'; it has: lower, upper",
        ),
        (
            "Text",
            {"text": "x"},
            "<class 'flash_runtime.worker.arguments.InvalidArguments'>",
            'say which with "method"',
        ),
    ],
    ids=["raises", "wrong-type", "missing", "not-a-dict", "unknown-method", "no-method"],
)
async def test_errors_match_the_official_sdk(
    name: str, job_input: Any, error_type: str, message_has: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPOD_POD_ID", "worker-7")
    handler = handler_for(name)
    the_job = job(job_input)
    ours = without_traceback(await handler.result(copy.deepcopy(the_job)))
    assert ours == without_traceback(await official(handler, the_job))
    assert ours["error_type"] == error_type
    assert message_has in ours["error_message"]
    assert ours["worker_id"] == "worker-7"
    assert ours["runpod_version"] == "1.12.0"
    assert set(ours) == {"error_type", "error_message", "hostname", "worker_id", "runpod_version"}


def test_error_result_is_runpods_payload() -> None:
    try:
        raise KeyError("k")
    except KeyError as err:
        result = error_result(err)
    assert list(result) == ["error"]
    info = json.loads(result["error"])
    assert info["error_type"] == "<class 'KeyError'>"
    assert info["error_message"] == "'k'"
    assert 'raise KeyError("k")' in info["error_traceback"]


# -- generators --------------------------------------------------------------------------------


async def stream(handler: Handler, job_input: Any) -> tuple[dict[str, Any], list[Any]]:
    sent: list[Any] = []

    async def send(chunk: dict[str, Any]) -> None:
        sent.append(chunk)

    result = await handler.stream_result(job(job_input), send)
    return result, sent


async def official_chunks(handler: Handler, job_input: Any) -> list[dict[str, Any]]:
    from runpod.serverless.modules.rp_job import run_job_generator

    return [c async for c in run_job_generator(handler.runpod_handler, job(job_input))]


@pytest.mark.parametrize("name", ["count", "acount"])
async def test_generator_chunks_are_streamed_and_gathered(name: str) -> None:
    handler = handler_for(name)
    assert handler.is_generator
    result, sent = await stream(handler, {"n": 3})
    assert sent == [{"output": 0}, {"output": 1}, {"output": 2}]
    assert result == {"output": [0, 1, 2]}
    assert sent == await official_chunks(handler, {"n": 3})


async def test_generator_exception_is_runpods_generator_error() -> None:
    handler = handler_for("count")
    result, sent = await stream(handler, {"n": 3, "fail_at": 1})
    assert sent == [{"output": 0}]
    assert result["error"].startswith("handler: failed at 1 \ntraceback: Traceback")
    theirs = await official_chunks(handler, {"n": 3, "fail_at": 1})
    assert theirs[-1]["error"].startswith("handler: failed at 1 \ntraceback: Traceback")


async def test_generator_chunk_with_error_ends_the_job() -> None:
    handler = handler_for("acount")
    result, sent = await stream(handler, {"n": 3, "error_at": 1})
    assert sent == [{"output": 0}]
    assert result == {"error": "chunk 1 is bad"}


async def test_generator_bad_input_is_an_error_result() -> None:
    handler = handler_for("count")
    result, sent = await stream(handler, {"n": "many"})
    assert sent == []
    assert result["error"] == "handler: count: Expected `int`, got `str` - at `$.n`"


async def test_mixed_class_does_not_stream_and_gathers_chunks() -> None:
    handler = handler_for("Mixed")
    assert not handler.is_generator
    assert await handler.result(job({"method": "chunks", "n": 2})) == {"output": [0, 1]}
    assert await handler.result(job({"method": "plain"})) == {"output": "plain"}
