"""The exceptions flash_runtime raises. Each message says what was wrong and what to do."""

from __future__ import annotations


class FlashError(Exception):
    """Base class of every error flash_runtime raises on purpose."""


class ConfigurationError(FlashError, ValueError):
    """An ``Endpoint`` (or a project) is configured in a way Flash cannot deploy."""


class ManifestError(FlashError):
    """``flash_manifest.json`` is missing, malformed, or does not match this worker."""


class ArtifactError(FlashError):
    """The build artifact cannot be used: unreadable, hostile, too large, wrong Python."""


class RemoteCallError(FlashError):
    """A call to a function that lives on another endpoint failed.

    ``endpoint`` names the target resource; ``cause`` is a short machine-readable reason
    (``not_deployed``, ``unauthorized``, ``timeout``, ``remote_error``, ``unavailable``). For a
    ``remote_error``, ``remote_type`` and ``remote_message`` are the type and message of the
    exception the function raised on its endpoint.
    """

    def __init__(
        self,
        endpoint: str,
        cause: str,
        message: str,
        *,
        remote_type: str | None = None,
        remote_message: str | None = None,
    ) -> None:
        super().__init__(f"call to endpoint {endpoint!r} failed ({cause}): {message}")
        self.endpoint = endpoint
        self.cause = cause
        self.remote_type = remote_type
        self.remote_message = remote_message


def describe(err: BaseException) -> str:
    """``str(err)``; for a module the worker's image does not have (``No module named 'x'``),
    with what to do about it: on Runpod the worker has only the image and the artifact."""
    text = str(err)
    if isinstance(err, ModuleNotFoundError) and err.name and text.startswith("No module named"):
        top = err.name.partition(".")[0]
        text += (
            f" (the worker's image does not have {top!r}: add the package that provides it to "
            f"the endpoint's dependencies, e.g. Endpoint(..., dependencies=[{top!r}]), and "
            "deploy again)"
        )
    return text
