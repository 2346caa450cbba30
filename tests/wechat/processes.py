"""The WeChat gateway as a real process (`python -m channels.wechat.gateway`), and what it talks to
when it is not the in-process harness: the sandbox platform and a relay-only "Rasa" (the real relay
channel in front of harness.EchoAgent) in the test's event loop."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, Optional

from aiohttp.test_utils import TestServer
from sanic import Sanic

from channels.wechat.relay import WeChatRelayInput
from channels.wechat.sandbox.app import PLATFORM, create_app
from tests.conftest import PYTHON, REPO, free_port, port_open
from tests.wechat.harness import RELAY_SECRET, EchoAgent
from tests.wechat.sandbox_helpers import config_from_env


class GatewayProcess:
    """One gateway process with the given environment, on a port of its own (a restart is a new
    GatewayProcess: a new process, as the launcher would start)."""

    def __init__(self, env: Dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.env = dict(env, SIYU_WECHAT_PORT=str(self.port))
        self.log = log
        self.process: Optional[subprocess.Popen] = None
        self.started_at: Optional[float] = None  # time.monotonic() of the Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "GatewayProcess":
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            [PYTHON, "-m", "channels.wechat.gateway", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        return self

    async def ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited: {self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway did not start: {self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: nothing is cleaned up, claims are not handed back."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        from tests.support import stop_process_group

        stop_process_group(self.process, signal.SIGTERM, grace_s=15)


def gateway_env(credentials: Dict[str, str], database_url: str, sandbox_url: str, rasa_url: str) -> Dict[str, str]:
    env = dict(os.environ, **credentials)
    env.update({"DATABASE_URL": database_url, "SIYU_WECHAT_WORK_API_BASE": sandbox_url,
                "SIYU_WECHAT_MP_API_BASE": sandbox_url, "SIYU_WECHAT_RASA_URL": rasa_url,
                "SIYU_WECHAT_RELAY_SECRET": RELAY_SECRET, "RASA_TELEMETRY_ENABLED": "false",
                "PYTHONUNBUFFERED": "1"})
    env.pop("REDIS_URL", None)
    return env


class RelayServer:
    """The Rasa server's relay channel with EchoAgent behind it, on a port of this event loop."""

    def __init__(self) -> None:
        self.agent = EchoAgent()
        self.port = free_port()
        self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> "RelayServer":
        os.environ["SIYU_WECHAT_RELAY_SECRET"] = RELAY_SECRET
        from bot.settings import reset_settings_cache

        reset_settings_cache()
        Sanic.test_mode = True
        app = Sanic(f"relay_test_{uuid.uuid4().hex[:8]}")
        app.ctx.agent = self.agent
        app.blueprint(WeChatRelayInput().blueprint(self.agent.handle), url_prefix="/webhooks/wechat_relay")
        self.server = await app.create_server(host="127.0.0.1", port=self.port, return_asyncio_server=True,
                                              access_log=False)
        await self.server.startup()
        await self.server.before_start()
        await self.server.after_start()
        return self

    async def stop(self) -> None:
        await self.server.before_stop()
        self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()
        os.environ.pop("SIYU_WECHAT_RELAY_SECRET", None)


async def start_sandbox(credentials: Dict[str, str], bot_url: Optional[str] = None, **overrides) -> TestServer:
    """The sandbox platform in this event loop; its Platform is server.app[PLATFORM]."""
    server = TestServer(create_app(config_from_env(credentials, bot_url=bot_url, **overrides)))
    await server.start_server()
    return server


def platform_of(server: TestServer):
    return server.app[PLATFORM]


def base_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")
