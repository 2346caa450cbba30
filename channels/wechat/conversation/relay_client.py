"""The gateway's client of the Rasa server's relay channel (channels/wechat/relay.py).

Waiting is safe, repeating is not: while Rasa is starting (503), cannot be reached (connection
refused, e.g. during a restart) or refuses the gateway's secret (403, a setup mistake) the turn has
not been seen, so it is tried again until `ready_wait_s` and then left in the inbox for the
sweeper; a turn that was sent but not answered in time may have been handled, so it is not
repeated (the inbox records it as failed, for staff to see). "Not seen" is decided as for the
platform calls (channels/wechat/outbound/http.py): a failure before the request had a connection.

The relay is a local service: proxy variables meant for the platform calls do not apply to it.
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Dict, List, Optional, Tuple

import aiohttp

from bot.settings import Settings, get_settings
from channels.wechat.outbound.http import Attempt, Sessions, may_have_been_sent, read_limited, text_of
from channels.wechat.relay import TOKEN_HEADER

logger = logging.getLogger("channels.wechat.conversation.relay_client")
PATH = "/webhooks/wechat_relay/webhook"
READY_WAIT_S = 120.0
RETRY_EVERY_S = 0.5
# below Sanic's keep-alive timeout (5 s): an idle connection is dropped here first, never reused
# just as the server closes it (a POST that fails that way could not be told from a lost one)
KEEPALIVE_S = 3.0
# connections kept alive: one per turn in flight
CONNECTIONS = 128
# Rasa's replies to one turn are a few messages; an answer past this is a fault
MAX_ANSWER_BYTES = 4 * 1024 * 1024


class RasaNotReady(Exception):
    """Rasa did not take the turn within the wait (not loaded, or not running): nothing was answered."""


class RelayFailed(Exception):
    """Rasa took the turn but did not answer it properly; it must not be sent again automatically."""


class RelayClient:
    def __init__(self, settings: Optional[Settings] = None, ready_wait_s: float = READY_WAIT_S) -> None:
        s = settings or get_settings()
        self.url = s.rasa_url + PATH
        secret = s.wechat_relay_secret
        self.timeout_s = s.wechat_relay_timeout_s
        self.ready_wait_s = ready_wait_s
        self._sessions = Sessions(
            limit=CONNECTIONS, keepalive_s=KEEPALIVE_S, timeout_s=self.timeout_s, trust_env=False,
            headers={TOKEN_HEADER: secret.get_secret_value() if secret is not None else "",
                     "Content-Type": "application/json"})
        self._warned = False

    async def close(self) -> None:
        await self._sessions.close()

    async def _post(self, turn: Dict[str, Any], progress: Attempt) -> Tuple[int, bytes, Optional[str]]:
        """One POST of the turn: the answer's status, body and charset (aiohttp's exceptions as they come)."""
        session = await self._sessions.get()
        async with session.post(self.url, data=json.dumps(turn).encode(),
                                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                allow_redirects=False, trace_request_ctx=progress) as resp:
            return resp.status, await read_limited(resp, MAX_ANSWER_BYTES), resp.charset

    async def answer(self, turn: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Rasa's replies to the turn (see relay.py for its fields)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_wait_s
        while True:
            progress = Attempt()
            try:
                status, body, charset = await self._post(turn, progress)
                if status == 200:
                    return json.loads(body)["replies"]
                detail = text_of(body, charset)[:200]
                if status not in (403, 503):
                    raise RelayFailed(f"rasa relay answered {status}: {detail}")
                # 503: loading, or the relay has no secret; 403: the two processes were given
                # different secrets. Rasa did not see the turn: it waits for the setup to be fixed
                reason = f"rasa relay answered {status}: {detail}"
                if status == 403 and not self._warned:
                    self._warned = True
                    logger.error("the Rasa server refuses the gateway: SIYU_WECHAT_RELAY_SECRET differs "
                                 "between the two processes; messages wait in the inbox")
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                if may_have_been_sent(exc, progress):
                    raise RelayFailed(f"rasa relay call failed: {type(exc).__name__}: {exc}") from exc
                # nothing was sent
                reason = f"rasa unreachable ({type(exc).__name__}: {exc})"
            except (ValueError, KeyError, TypeError) as exc:
                raise RelayFailed(f"rasa relay call failed: {type(exc).__name__}: {exc}") from exc
            if loop.time() > deadline:
                raise RasaNotReady(reason)
            await asyncio.sleep(RETRY_EVERY_S)
