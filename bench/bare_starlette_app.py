"""Benchmark baseline: a bare Starlette + orjson app doing the load-balanced worker's JSON echo.

Serve it with the same uvicorn settings as the worker (see ``lb_bench.py``):
``python -m uvicorn bare_starlette_app:app --app-dir bench --port 8000 ...``
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def process(request: Request) -> Response:
    data = orjson.loads(await request.body())
    body = orjson.dumps({"status": "success", "echo": data["input_data"]})
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/process", process, methods=["POST"])])
