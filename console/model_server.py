"""The model server Rasa pulls from (endpoints.yml `models`, Rasa's own polling): GET
/models/current with the run's token answers the active model (desk/training.py) with its
fingerprint as ETag, or 304 when Rasa already has it. A supervisor switching a model in from the
console is picked up by every Rasa worker at its next pull."""
from __future__ import annotations

import asyncio
import hmac
import os

from aiohttp import web

from actions.db.engine import async_session
from desk.training import active_model


async def current_model(request: web.Request) -> web.Response:
    secret = os.environ.get("SIYU_MODEL_SERVER_TOKEN", "")
    offered = request.query.get("token", "")
    if not secret or not hmac.compare_digest(offered.encode(), secret.encode()):
        return web.json_response({"error": "forbidden"}, status=403)
    async with async_session() as s:
        path = await active_model(s)
    if path is None or not path.exists():
        return web.json_response({"error": "no model"}, status=404)
    etag = path.name.removesuffix(".tar.gz")
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers={"ETag": etag})
    body = await asyncio.to_thread(path.read_bytes)
    return web.Response(body=body, content_type="application/gzip", headers={"ETag": etag, "filename": path.name})
