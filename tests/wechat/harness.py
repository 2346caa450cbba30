"""The connectors wired to the sandbox without a Rasa model: the real gateway app (connectors,
runtime: inbox, pipeline, outbox worker, API client, token cache) on this event loop, asking the
real relay channel over HTTP, and the sandbox over HTTP; only Rasa's agent behind the relay is
replaced by one that echoes what it is told. Gateway and relay share one Sanic app (one port)."""
from __future__ import annotations

import asyncio
import inspect
import os
import uuid
from typing import Dict, List, Optional

import aiohttp
import sqlalchemy as sa
from aiohttp.test_utils import TestServer
from rasa.core.channels.channel import UserMessage
from sanic import Sanic

from bot.settings import reset_settings_cache
from channels.wechat.config import WeChatConfig
from channels.wechat.db import session as async_session
from channels.wechat.gateway import create_app as create_gateway_app
from channels.wechat.relay import WeChatRelayInput
from channels.wechat.runtime import WeChatRuntime
from channels.wechat.sandbox.app import PLATFORM, create_app
from channels.wechat.sandbox.config import sandbox_credentials
from tests.conftest import free_port
from tests.wechat.sandbox_helpers import config_from_env

RELAY_SECRET = "harness-relay-secret"


class EchoAgent:
    """Stands in for Rasa's agent: ready at once (unless told otherwise), no intents (one request per message)."""

    def __init__(self) -> None:
        self.received: List[UserMessage] = []
        self.delay_s = 0.0
        self.ready = True

    def is_ready(self) -> bool:
        return self.ready

    async def parse_message(self, text: str) -> Dict:
        return {"intent": {"name": None, "confidence": 0.0}}

    def turns_of(self, conversation_id: str) -> List[UserMessage]:
        return [m for m in self.received if m.sender_id == conversation_id]

    async def handle(self, message: UserMessage) -> None:
        self.received.append(message)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await message.output_channel.send_response(message.sender_id, {"text": f"收到：{message.text}"})


class Harness:
    def __init__(self, env: Dict[str, str], sandbox_overrides: Optional[Dict] = None,
                 redis_prefix: str = "siyu:") -> None:
        self.env = env
        self.redis_prefix = redis_prefix
        self.sandbox_overrides = sandbox_overrides or {}
        self.agent = EchoAgent()
        self.bot_port = free_port()
        self.sandbox_server: Optional[TestServer] = None
        self.server = None
        self.runtime: Optional[WeChatRuntime] = None
        self.http: Optional[aiohttp.ClientSession] = None

    @property
    def bot_url(self) -> str:
        return f"http://127.0.0.1:{self.bot_port}"

    @property
    def sandbox_url(self) -> str:
        return str(self.sandbox_server.make_url("")).rstrip("/")

    @property
    def platform(self):
        return self.sandbox_server.app[PLATFORM]

    async def start(self) -> "Harness":
        config = config_from_env(self.env, bot_url=self.bot_url, **self.sandbox_overrides)
        self.sandbox_server = TestServer(create_app(config))
        await self.sandbox_server.start_server()
        os.environ.update(self.env)
        os.environ["SIYU_WECHAT_WORK_API_BASE"] = self.sandbox_url
        os.environ["SIYU_WECHAT_MP_API_BASE"] = self.sandbox_url
        os.environ["SIYU_WECHAT_RASA_URL"] = self.bot_url
        os.environ.setdefault("SIYU_WECHAT_RELAY_SECRET", RELAY_SECRET)
        reset_settings_cache()
        self.runtime = WeChatRuntime(WeChatConfig.from_settings(), self.redis_prefix)
        await self.start_bot()
        self.http = aiohttp.ClientSession()
        return self

    async def start_bot(self) -> None:
        # test mode keeps Sanic's TouchUp from rewriting its classes a second time for a second app
        Sanic.test_mode = True
        app = create_gateway_app(self.runtime, name=f"wechat_test_{uuid.uuid4().hex[:8]}")
        app.ctx.agent = self.agent
        app.blueprint(WeChatRelayInput().blueprint(self.agent.handle), url_prefix="/webhooks/wechat_relay")
        self.server = await app.create_server(host="127.0.0.1", port=self.bot_port, return_asyncio_server=True,
                                              access_log=False)
        await self.server.startup()
        await self.server.before_start()
        await self.server.after_start()

    async def stop_bot(self) -> None:
        """Like a process exit: the server and the runtime stop; the database keeps what they stored."""
        await self.server.before_stop()
        self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()

    async def restart_bot(self) -> None:
        await self.stop_bot()
        self.runtime = WeChatRuntime(WeChatConfig.from_settings(), self.redis_prefix)
        await self.start_bot()

    async def stop(self) -> None:
        await self.stop_bot()
        if self.http:
            await self.http.close()
        await self.sandbox_server.close()
        for key in list(self.env) + ["SIYU_WECHAT_WORK_API_BASE", "SIYU_WECHAT_MP_API_BASE", "SIYU_WECHAT_RASA_URL",
                                     "SIYU_WECHAT_RELAY_SECRET"]:
            os.environ.pop(key, None)
        reset_settings_cache()

    # --- acting as users and reading what arrived ---------------------------------------------------
    async def say(self, channel: str, user: str, text: str, **extra) -> Dict:
        async with self.http.post(self.sandbox_url + "/sandbox/say",
                                  json={"channel": channel, "user": user, "text": text, "wait": True, **extra}) as r:
            return await r.json()

    def deliveries(self, channel: Optional[str] = None, to: Optional[str] = None) -> List[Dict]:
        return [d for d in self.platform.deliveries
                if (channel is None or d["channel"] == channel) and (to is None or d["to"] == to)]

    async def wait_for(self, predicate, timeout: float = 10.0, interval: float = 0.05):
        """The predicate's first truthy value; the predicate may be a coroutine function (a database read)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(interval)

    async def quiet(self, timeout: float = 15.0) -> None:
        """Wait until the gateway has nothing left to do (before asserting that nothing more
        arrives): no background task of the runtime running, every inbox row answered or given up,
        every outbox row due now settled."""
        from channels.wechat.models import InboundMessageRow, OutboxMessage, now_utc

        async def idle() -> bool:
            if any(not task.done() for task in self.runtime._tasks):
                return False
            async with async_session() as session:
                unanswered = (await session.execute(sa.select(sa.func.count()).select_from(InboundMessageRow).where(
                    InboundMessageRow.status.in_(("received", "processing"))))).scalar()
                unsent = (await session.execute(sa.select(sa.func.count()).select_from(OutboxMessage).where(
                    OutboxMessage.status.in_(("pending", "sending")), OutboxMessage.next_attempt_at <= now_utc()
                ))).scalar()
            return unanswered == 0 and unsent == 0

        await self.wait_for(idle, timeout, interval=0.1)


def fresh_env(**overrides) -> Dict[str, str]:
    env = sandbox_credentials()
    env.update(overrides)
    return env
