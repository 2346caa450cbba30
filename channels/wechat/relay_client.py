"""The gateway's client of the Rasa server's relay channel (channels/wechat/relay.py).

Waiting is safe, repeating is not: while Rasa is starting (503), cannot be reached (connection
refused, e.g. during a restart) or refuses the gateway's secret (403, a setup mistake) the turn has
not been seen, so it is tried again until `ready_wait_s` and then left in the inbox for the
sweeper; a turn that was sent but not answered in time may have been handled, so it is not
repeated (the inbox records it as failed, for staff to see).
"""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Dict, List, Optional

from bot.settings import Settings, get_settings
from channels.wechat.http_client import ConnectFailed, KeepAliveClient, RequestFailed
from channels.wechat.relay import TOKEN_HEADER

logger = logging.getLogger("channels.wechat.relay_client")
PATH = "/webhooks/wechat_relay/webhook"
READY_WAIT_S = 120.0
RETRY_EVERY_S = 0.5
# below Sanic's keep-alive timeout (5 s): an idle connection is dropped here first, never reused
# just as the server closes it (a POST that fails that way could not be told from a lost one)
KEEPALIVE_S = 3.0


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
        # connections kept alive: one per turn in flight
        self._http = KeepAliveClient(
            timeout_s=self.timeout_s, keepalive_s=KEEPALIVE_S, limit=128,
            headers={TOKEN_HEADER: secret.get_secret_value() if secret is not None else "",
                     "Content-Type": "application/json"})
        self._warned = False

    async def close(self) -> None:
        await self._http.close()

    async def answer(self, turn: Dict[str, Any]) -> List[Dict[str, Any]]:
        """Rasa's replies to the turn (see relay.py for its fields)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ready_wait_s
        while True:
            try:
                resp = await self._http.request("POST", self.url, body=json.dumps(turn).encode(),
                                               timeout_s=self.timeout_s)
                if resp.status == 200:
                    return resp.json()["replies"]
                detail = resp.text()[:200]
                if resp.status not in (403, 503):
                    raise RelayFailed(f"rasa relay answered {resp.status}: {detail}")
                # 503: loading, or the relay has no secret; 403: the two processes were given
                # different secrets. Rasa did not see the turn: it waits for the setup to be fixed
                reason = f"rasa relay answered {resp.status}: {detail}"
                if resp.status == 403 and not self._warned:
                    self._warned = True
                    logger.error("the Rasa server refuses the gateway: SIYU_WECHAT_RELAY_SECRET differs "
                                 "between the two processes; messages wait in the inbox")
            except ConnectFailed as exc:
                # nothing was sent
                reason = f"rasa unreachable ({exc})"
            except (RequestFailed, asyncio.TimeoutError, ValueError, KeyError, TypeError) as exc:
                raise RelayFailed(f"rasa relay call failed: {type(exc).__name__}: {exc}") from exc
            if loop.time() > deadline:
                raise RasaNotReady(reason)
            await asyncio.sleep(RETRY_EVERY_S)
