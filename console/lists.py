"""The queue lists of the moment, computed once for every page that asks for them: a live event
makes every open page reload its list at about the same time, and ten agents asking for the same
200 rows would otherwise compute and serialise them ten times in a row. An entry lives until the
next desk event (the watcher publishes every change after its commit) and at most `max_age_s`; a
request that arrives while the list is being computed waits for that computation."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Dict, Hashable, Tuple


class SharedLists:
    def __init__(self, max_age_s: float = 1.0) -> None:
        self.max_age_s = max_age_s
        self._entries: Dict[Hashable, Tuple[float, asyncio.Future]] = {}

    def invalidate(self) -> None:
        self._entries.clear()

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[object]]) -> object:
        loop = asyncio.get_running_loop()
        entry = self._entries.get(key)
        if entry is not None and loop.time() - entry[0] < self.max_age_s:
            return await asyncio.shield(entry[1])
        future = asyncio.ensure_future(compute())
        self._entries[key] = (loop.time(), future)
        try:
            return await asyncio.shield(future)
        except Exception:
            if self._entries.get(key, (0, None))[1] is future:
                del self._entries[key]  # a failure is not shared with later requests
            raise
