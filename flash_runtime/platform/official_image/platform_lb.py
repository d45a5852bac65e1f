"""The local platform's wrapper around the image's load-balanced entry (not part of the image):
the worker's port answers only requests carrying its key (``FLASH_WORKER_KEY``, sent by the
platform's balancer as ``X-Flash-Worker-Key``), as flash_runtime's own workers do. The header
is left on: our worker, which the image's uvicorn serves in this process (worker/handover.py),
checks it again and takes it off before user code sees the request. Run as ``uvicorn
platform_lb:app``."""

from __future__ import annotations

import hmac
import os
from typing import Any

from lb_handler import app as image_app

KEY = os.environ.get("FLASH_WORKER_KEY", "").encode()
HEADER = b"x-flash-worker-key"
REFUSED = b'{"error": "Unauthorized", "message": "this worker answers its platform\'s load balancer only"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if KEY and scope["type"] == "http":
        headers = scope["headers"]
        given = next((value for name, value in headers if name == HEADER), None)
        if given is None or not hmac.compare_digest(given, KEY):
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": REFUSED})
            return
    await image_app(scope, receive, send)
