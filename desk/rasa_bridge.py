"""Tells the Rasa server that a person took a conversation (pause: the bot stays silent) or gave it
back (resume), through the desk_bridge channel (channels/desk_bridge.py). Bounded time, retried on
connection errors and 5xx; a failure is raised so the caller can undo its own change."""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional

import aiohttp

from bot.settings import Settings, get_settings

logger = logging.getLogger("desk.rasa_bridge")
TIMEOUT_S = 5.0
ATTEMPTS = 3


class BridgeError(RuntimeError):
    """The Rasa server could not be told (down, refusing, or misconfigured)."""


class RasaBridge:
    def __init__(self, settings: Optional[Settings] = None, session: Optional[aiohttp.ClientSession] = None) -> None:
        settings = settings or get_settings()
        self.url = f"{settings.rasa_url}/webhooks/desk_bridge/webhook"
        secret = settings.desk_bridge_secret
        self._secret = secret.get_secret_value() if secret is not None else ""
        self._session = session
        self._own_session = session is None

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self._session

    async def pause(self, conversation_id: str) -> None:
        await self._send(conversation_id, [{"event": "pause"},
                                           {"event": "slot", "name": "handoff_queued", "value": False}])

    async def resume(self, conversation_id: str) -> None:
        await self._send(conversation_id, [{"event": "resume"},
                                           {"event": "slot", "name": "handoff_queued", "value": False}])

    async def _send(self, conversation_id: str, events: List[Dict[str, Any]]) -> None:
        if not self._secret:
            raise BridgeError("SIYU_DESK_BRIDGE_SECRET is not set")
        body = {"conversation_id": conversation_id, "events": events}
        headers = {"Authorization": f"Bearer {self._secret}"}
        delay, last = 0.2, ""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                async with self._client().post(self.url, json=body, headers=headers,
                                               timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
                    if resp.status < 500 and resp.status != 429:
                        break
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                last = type(exc).__name__
            logger.warning("rasa bridge call failed", extra={"conversation": conversation_id, "error": last,
                                                            "attempt": attempt})
            if attempt < ATTEMPTS:
                await asyncio.sleep(delay)
                delay *= 3
        raise BridgeError(f"the Rasa server was not told ({last})")
