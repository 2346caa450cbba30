"""Live updates for staff pages: the desk watcher's events (new handoffs, claims, customer
messages) fanned out to every open page over server-sent events. A page that falls behind loses
its oldest events and is told to reload its lists rather than slowing the others down."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable, Dict, Optional, Set

from aiohttp import web
from aiohttp_sse import sse_response

logger = logging.getLogger("console.live")
QUEUE_LIMIT = 200


class Hub:
    def __init__(self, on_event: Optional[Callable[[], None]] = None) -> None:
        self._subscribers: Set[asyncio.Queue] = set()
        # told first of every event (the shared queue lists are out of date then)
        self._on_event = on_event

    @property
    def listeners(self) -> int:
        return len(self._subscribers)

    async def publish(self, event: Dict[str, Any]) -> None:
        if self._on_event is not None:
            self._on_event()
        for queue in list(self._subscribers):
            if queue.full():
                # a stalled page: drop what it has not read and ask it to reload
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait({"type": "resync"})
            else:
                queue.put_nowait(event)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_LIMIT)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._subscribers.discard(queue)


async def stream(request: web.Request) -> web.StreamResponse:
    """GET /api/desk/stream: `event: desk|message|resync`, data: the event as JSON."""
    hub: Hub = request.app["hub"]
    queue = hub.subscribe()
    resp = None
    try:
        async with sse_response(request, ping_interval=15, headers={"X-Accel-Buffering": "no"}) as resp:
            await resp.send(json.dumps({"type": "hello", "username": request["staff"].username}), event="hello")
            while resp.is_connected():
                event = await queue.get()
                await resp.send(json.dumps(event, ensure_ascii=False), event=event.get("type", "desk"))
    except ConnectionResetError:
        pass
    finally:
        hub.unsubscribe(queue)
    return resp
