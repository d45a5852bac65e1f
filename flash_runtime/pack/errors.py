"""Errors the packer raises. Each message names the file and line when there is one."""

from __future__ import annotations

from ..errors import FlashError


class BuildError(FlashError):
    """The project cannot be packed: discovery, validation, dependencies, size."""


class InitError(FlashError):
    """``flash init`` cannot create the project where it was asked to."""
