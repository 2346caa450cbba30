"""What every WeChat connector does with a callback: verify it (403 for forged or stale, with a log
line), read it (400 for malformed), store what it carries, acknowledge it once the store is
committed, and leave the answering to a background task. Nothing unverified or unreadable reaches
Rasa.

Subclasses say how their platform signs and formats callbacks (`verify_get`, `read_post`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional, Text

from rasa.core.channels.channel import InputChannel, OutputChannel, UserMessage
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from channels.wechat.inbound.crypto import CallbackRejected, CryptoConfigError, MalformedCallback
from channels.wechat.inbound.payloads import InboundMessage
from channels.wechat.runtime import WeChatRuntime, get_runtime

logger = logging.getLogger("channels.wechat")
ACK = "success"
# the platform waits 5 s before retrying; a callback is answered well within that
ACK_BUDGET_S = 1.0


def query(request: Request, name: str) -> Optional[str]:
    value = request.args.get(name)
    return value if isinstance(value, str) else None


class WeChatInput(InputChannel):
    """Base of the WeChat connectors (Rasa InputChannels by shape; the gateway mounts their blueprints)."""

    channel = ""  # wecom_kf / mp / mini / group

    @classmethod
    def from_credentials(cls, credentials: Optional[Dict[Text, Any]]) -> InputChannel:
        # credentials come from the SIYU_WECHAT_* environment (bot/settings.py), never from the yml file
        return cls()

    def __init__(self, runtime: Optional[WeChatRuntime] = None) -> None:
        self._runtime = runtime

    @property
    def runtime(self) -> WeChatRuntime:
        return self._runtime or get_runtime()

    def get_output_channel(self) -> Optional[OutputChannel]:
        # proactive messages use channels.wechat.outbound.sender (it checks windows and quotas); Rasa's
        # trigger_intent output is not routed here
        return None

    # --- to implement -------------------------------------------------------------------------------
    def verify_get(self, request: Request) -> str:
        """The body to answer the platform's URL verification with."""
        raise NotImplementedError

    async def read_post(self, request: Request) -> List[InboundMessage]:
        """Verified, decrypted, parsed messages of a callback (may be empty)."""
        raise NotImplementedError

    async def accept(self, messages: List[InboundMessage]) -> None:
        """Store and schedule the messages (before the acknowledgement)."""
        from channels.wechat.conversation.pipeline import conversation_id

        await self.runtime.take_in([(message, conversation_id(message)) for message in messages])

    # --- shared -------------------------------------------------------------------------------------
    def _reject(self, request: Request, exc: Exception) -> HTTPResponse:
        status = getattr(exc, "status", 400)
        logger.warning("wechat callback rejected", extra={
            "connector": self.name(), "status": status, "reason": str(exc)[:200],
            "remote": request.headers.get("x-forwarded-for") or request.ip})
        return response.text("forbidden" if status == 403 else "bad request", status=status)

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        # `on_new_message` is unused: the gateway asks the Rasa server over its relay channel
        bp = Blueprint(f"wechat_{self.name()}", __name__)
        runtime = self.runtime

        @bp.listener("after_server_start")
        async def _start(app, _loop) -> None:
            await runtime.start()

        @bp.listener("before_server_stop")
        async def _stop(_app, _loop) -> None:
            await runtime.stop()

        @bp.route("/health", methods=["GET"])
        async def health(request: Request) -> HTTPResponse:
            return response.json({"status": "ok" if self.configured() else "not configured"})

        @bp.route("/webhook", methods=["GET"])
        async def verify(request: Request) -> HTTPResponse:
            if not self.configured():
                return response.text("connector not configured", status=503)
            try:
                return response.text(self.verify_get(request))
            except (CallbackRejected, MalformedCallback) as exc:
                return self._reject(request, exc)

        @bp.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            if not self.configured():
                return response.text("connector not configured", status=503)
            try:
                messages = await self.read_post(request)
            except (CallbackRejected, MalformedCallback) as exc:
                return self._reject(request, exc)
            except CryptoConfigError as exc:
                logger.error("wechat connector misconfigured", extra={"connector": self.name(), "reason": str(exc)})
                return response.text("connector misconfigured", status=503)
            if not messages:  # nothing to store (a 微信客服 doorbell: its messages are pulled after the ack)
                return response.text(ACK)
            # the store is never cancelled half-way (it could leave the message marked as seen in Redis
            # but not stored, and the platform's retry would be dropped): past the budget it goes on
            # and answers the message when done
            stored = runtime.spawn_tracked(self.accept(messages))
            try:
                await asyncio.wait_for(asyncio.shield(stored), ACK_BUDGET_S)
            except asyncio.TimeoutError:
                # the database is slow right now: the store goes on and answers the message when it is
                # done (the platform's retry is then a duplicate); if it fails, the retry stores it
                logger.error("wechat callback not stored in time", extra={"connector": self.name(),
                                                                          "budget_s": ACK_BUDGET_S})
                return response.text("busy, try again", status=503)
            except Exception:  # noqa: BLE001 - not stored: a 500 makes the platform retry
                logger.exception("wechat callback could not be stored", extra={"connector": self.name()})
                return response.text("try again", status=500)
            return response.text(ACK)

        return bp

    def configured(self) -> bool:
        raise NotImplementedError
