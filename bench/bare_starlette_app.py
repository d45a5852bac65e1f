"""Benchmark ceiling: bare Starlette + orjson doing the work of the template's ``POST /process``.

The template's route takes ``input_data: dict`` from the JSON body and returns it with a status
and an ISO timestamp; this does the same by hand (parse, check the field is an object, build
the answer, serialise), with nothing else in the way. Served with the same uvicorn settings as
the workers (see ``lb_bench.py``):
``python -m uvicorn bare_starlette_app:app --app-dir bench --port 8000 ...``
"""

from __future__ import annotations

from datetime import datetime

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def process(request: Request) -> Response:
    try:
        data = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return Response(b'{"error": "invalid JSON"}', 400, media_type="application/json")
    input_data = data.get("input_data") if isinstance(data, dict) else None
    if not isinstance(input_data, dict):
        return Response(b'{"error": "input_data"}', 422, media_type="application/json")
    body = orjson.dumps(
        {"status": "success", "echo": input_data, "timestamp": datetime.now().isoformat()}
    )
    return Response(body, media_type="application/json")


app = Starlette(routes=[Route("/process", process, methods=["POST"])])
