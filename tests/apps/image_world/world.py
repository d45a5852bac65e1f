"""Endpoints that show where a local worker runs: in its image's world, not the CLI's."""

from runpod_flash import Endpoint, GpuGroup


@Endpoint(name="undeclared", cpu="cpu3c-1-2", system_dependencies=["jq", "ffmpeg"])
def undeclared() -> str:
    import graphql  # the CLI's environment has graphql-core; the app never lists it

    return str(graphql.__name__)


@Endpoint(name="numbers", cpu="cpu3c-1-2", dependencies=["numpy"])
def numbers(values: list[float]) -> float:
    import numpy

    return float(numpy.mean(values))


@Endpoint(name="tensors", gpu=GpuGroup.AMPERE_80)
def tensors() -> str:
    import os

    import torch  # on the GPU image, and not installable here

    return f"{torch.__version__} {os.environ.get('CUDA_VISIBLE_DEVICES')}"


where = Endpoint(name="where", cpu="cpu3c-1-2")


@where.get("/prefix")
def prefix() -> dict:
    import sys

    return {"prefix": sys.prefix}  # a load-balanced worker runs in the image's world too
