"""The queue handler: a Runpod job in, the user's function called, a Runpod result out.

One :class:`Handler` serves both job loops. Under the official loop (``FLASH_QUEUE_LOOP=runpod``)
``runpod.serverless.start`` gets :attr:`Handler.runpod_handler` and shapes results itself; under
ours, :meth:`Handler.result` and :meth:`Handler.stream_result` shape them exactly as the ``runpod``
1.12 SDK's ``run_job`` and ``handle_job`` do, so the platform and the official client read the
results of both loops the same way:

* a dict output loses its ``error`` key (which becomes the result's ``error``) and its
  ``refresh_worker`` key (which becomes ``"stopPod": true``); an empty dict output is omitted;
* an exception becomes ``{"error": "<JSON text>"}`` whose object holds ``error_type``,
  ``error_message``, ``error_traceback``, ``hostname``, ``worker_id`` and ``runpod_version``;
* a generator's chunks are streamed one by one and also gathered into the final ``output`` list;
  a chunk that is a dict with a truthy ``error`` ends the job with that error, and an exception
  in a generator ends it with ``{"error": "handler: <message> \\ntraceback: <traceback>"}``.

Bad job input (not an object, a value of the wrong type, an unknown ``method``) raises
:class:`~flash_runtime.worker.arguments.InvalidArguments` inside the handler, so it comes back
as an ordinary error result naming the field, and the worker keeps serving. Such a result
carries no traceback: the caller's input was wrong, not the code, and the worker's internals
are nobody's business (:func:`input_error_result`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from typing import Any

import anyio.to_thread

from ..errors import FlashError
from ..protocol.wire import job_error
from .arguments import InvalidArguments
from .loader import Callee, LoadedResource

log = logging.getLogger("flash_runtime.worker.queue")

# The protocol version we speak, reported where the official worker reports its own version.
RUNPOD_PROTOCOL_VERSION = "1.12.0"

Job = Mapping[str, Any]
Result = dict[str, Any]


@functools.cache
def runpod_version() -> str:
    """The ``runpod`` version to report: the installed SDK's, else the protocol version we speak.

    Read from package metadata, never by importing ``runpod`` (that costs over a second).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runpod")
    except PackageNotFoundError:
        return RUNPOD_PROTOCOL_VERSION


def error_result(err: BaseException) -> Result:
    """The result of a job whose function raised ``err``, in ``run_job``'s shape."""
    text = job_error(
        err,
        "".join(traceback.format_exception(err)),
        hostname=os.environ.get("RUNPOD_POD_HOSTNAME", "unknown"),
        worker_id=os.environ.get("RUNPOD_POD_ID", "unknown"),
        runpod_version=runpod_version(),
    )
    return {"error": text}


def json_default(value: Any) -> Any:
    """``json.dumps``'s fallback for job outputs: pydantic models as their JSON data."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _plain(output: Any) -> Any:
    """``output`` with pydantic models turned into their JSON data (for the official loop,
    which encodes outputs itself); other outputs as they are."""
    if "pydantic" not in sys.modules:
        return output
    try:
        return json.loads(json.dumps(output, default=json_default))
    except (TypeError, ValueError):
        return output  # not JSON either way: the official loop reports it


def input_error_result(err: InvalidArguments) -> Result:
    """The result of a job whose input does not fit the function: the error's type and
    message, and no traceback."""
    text = job_error(
        err,
        "",
        hostname=os.environ.get("RUNPOD_POD_HOSTNAME", "unknown"),
        worker_id=os.environ.get("RUNPOD_POD_ID", "unknown"),
        runpod_version=runpod_version(),
    )
    return {"error": text}


def output_result(output: Any) -> Result:
    """The result of a job whose function returned ``output``, in ``run_job``'s shape."""
    result: Result = {}
    if isinstance(output, dict):
        error = output.pop("error", None)
        refresh_worker = output.pop("refresh_worker", None)
        result["output"] = output
        if error:
            result["error"] = error
        if refresh_worker:
            result["stopPod"] = True
    else:
        result["output"] = output
    if result.get("output") == {}:
        del result["output"]
    return result


class Handler:
    """Runs jobs against the one function (or class endpoint) of a queue resource."""

    def __init__(self, loaded: LoadedResource) -> None:
        if len(loaded.functions) != 1:
            raise FlashError(
                f"queue resource {loaded.name!r} must serve exactly one function or class, but "
                f"the manifest lists {len(loaded.functions)}; rebuild with `flash build`"
            )
        self.function = loaded.functions[0]
        self.name = self.function.entry.name
        self.slots = max(1, loaded.resource.max_concurrency)
        callees = (
            [self.function.callee]
            if self.function.callee is not None
            else list(self.function.methods.values())
        )
        # Whether jobs stream is a property of the handler, not of one job, because that is how
        # the official loop decides (it inspects the handler function). A class endpoint mixing
        # generator and plain methods therefore does not stream: its generator methods' chunks
        # come back together as the output list, under either loop.
        self.is_generator = bool(callees) and all(c.kind in ("gen", "agen") for c in callees)

    @property
    def runpod_handler(self) -> Callable[[Job], Any]:
        """The function to give ``runpod.serverless.start`` as its ``handler``."""
        return self._official_stream if self.is_generator else self._official_call

    async def _official_call(self, job: Job) -> Any:
        # A dict with "error" is how a handler fails a job without a traceback in runpod's loop.
        try:
            return _plain(await self.call(job))
        except InvalidArguments as err:
            log.warning("job %s: %s", job.get("id"), err)
            return input_error_result(err)

    async def _official_stream(self, job: Job) -> AsyncGenerator[Any, None]:
        try:
            callee, kwargs = self.target(job)
        except InvalidArguments as err:
            # runpod's loop prints the traceback of what a generator raises: start it here.
            raise InvalidArguments(err.message, err.field).with_traceback(None) from None
        async for chunk in self._chunks(callee, kwargs):
            yield _plain(chunk)

    # -- what a job asks for ----------------------------------------------------------------

    def target(self, job: Job) -> tuple[Callee, dict[str, Any]]:
        """The callable a job selects and its keyword arguments, checked against its hints."""
        data = job.get("input")
        if not isinstance(data, dict):
            raise InvalidArguments(
                f"job input must be a JSON object whose fields are the keyword arguments of "
                f"{self.name}, got {type(data).__name__}"
            )
        data = {key: value for key, value in data.items() if key != "__empty"}
        if self.function.callee is not None:
            callee = self.function.callee
        else:
            method = data.pop("method", None)
            if method is not None and not isinstance(method, str):
                raise InvalidArguments(
                    f'"method" must be the name of a method of {self.name}, got '
                    f"{type(method).__name__}",
                    "method",
                )
            try:
                callee = self.function.method(method)
            except LookupError as err:
                raise InvalidArguments(str(err.args[0]), "method") from None
        return callee, callee.args.from_mapping(data)

    # -- the handler functions the official loop calls --------------------------------------

    async def call(self, job: Job) -> Any:
        """Run a job to completion and return the function's output (raises what it raises).

        Plain functions run in a worker thread, so the event loop keeps taking and stopping
        jobs; the thread pool is at least as large as the resource's ``max_concurrency``.
        """
        callee, kwargs = self.target(job)
        if callee.kind == "async":
            return await callee.func(**kwargs)
        if callee.kind == "sync":
            return await self._in_thread(functools.partial(callee.func, **kwargs))
        return [chunk async for chunk in self._chunks(callee, kwargs)]

    async def stream(self, job: Job) -> AsyncGenerator[Any, None]:
        """Run a generator job, yielding its chunks (the handler when :attr:`is_generator`)."""
        callee, kwargs = self.target(job)
        async for chunk in self._chunks(callee, kwargs):
            yield chunk

    async def _chunks(self, callee: Callee, kwargs: dict[str, Any]) -> AsyncGenerator[Any, None]:
        if callee.kind == "agen":
            async for chunk in callee.func(**kwargs):
                yield chunk
            return
        # A plain generator runs in worker threads one step at a time, so it never blocks the
        # loop and a stop takes effect between two chunks.
        iterator = callee.func(**kwargs)
        done = object()
        try:
            while (chunk := await self._in_thread(next, iterator, done)) is not done:
                yield chunk
        finally:
            iterator.close()

    async def _in_thread(self, func: Callable[..., Any], *args: Any) -> Any:
        limiter = anyio.to_thread.current_default_thread_limiter()
        if limiter.total_tokens < self.slots:
            limiter.total_tokens = self.slots
        return await anyio.to_thread.run_sync(func, *args)

    # -- results in the official SDK's shapes, for our loop ---------------------------------

    async def result(self, job: Job) -> Result:
        """Run a non-streaming job and return its result as ``runpod``'s ``run_job`` would."""
        try:
            output = await self.call(job)
        except InvalidArguments as err:
            log.warning("job %s: %s", job.get("id"), err)
            return input_error_result(err)
        except Exception as err:
            log.error("job %s failed: %s", job.get("id"), err, exc_info=err)
            return error_result(err)
        return output_result(output)

    async def stream_result(
        self, job: Job, send_chunk: Callable[[Result], Awaitable[None]]
    ) -> Result:
        """Run a generator job, sending ``{"output": chunk}`` per chunk, and return its result.

        Mirrors the generator branch of ``runpod``'s ``handle_job`` with
        ``return_aggregate_stream`` on (the official loop is started with it too).
        """
        result: Result = {"output": []}
        chunks = self.stream(job)
        try:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except InvalidArguments as err:  # the generator's shape, less the traceback
                    log.warning("job %s: %s", job.get("id"), err)
                    return {"error": f"handler: {err}"}
                except Exception as err:
                    log.error("job %s failed: %s", job.get("id"), err, exc_info=err)
                    tb = "".join(traceback.format_exception(err))
                    return {"error": f"handler: {err} \ntraceback: {tb}"}
                if isinstance(chunk, dict) and chunk.get("error"):
                    return {"error": str(chunk["error"])}
                result["output"].append(chunk)
                await send_chunk({"output": chunk})
        finally:
            await chunks.aclose()
        return result
