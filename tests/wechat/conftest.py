"""Databases for the WeChat tests: a migrated, empty shop database on SQLite and on PostgreSQL
(a temporary database created and dropped here), and Redis isolated by a unique key prefix.
Unreachable services skip with a printed reason, and fail under CI=true (tests/conftest.py)."""
from __future__ import annotations

import asyncio
import os
import uuid
from typing import Iterator

import pytest

# importing Rasa's channel module switches the process to uvloop's event loop policy, whose
# get_event_loop() pytest-asyncio cannot use; import it once here and restore the default policy
import rasa.core.channels.channel  # noqa: F401

from tests.conftest import REDIS_TEST_URL, _create_pg_database, _drop_pg_database, port_open, unavailable, use_database

asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())


def _migrate(url: str) -> None:
    from actions.db.migrate import upgrade

    use_database(url)
    upgrade()


@pytest.fixture
def sqlite_db(tmp_path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'wechat.db'}"
    _migrate(url)
    yield url


@pytest.fixture
def postgres_db() -> Iterator[str]:
    if not port_open("127.0.0.1", 5432):
        unavailable("PostgreSQL is not reachable on 127.0.0.1:5432")
    url = _create_pg_database()
    try:
        _migrate(url)
        yield url
    finally:
        _drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgres"])
def wechat_db(request) -> Iterator[str]:
    """The connectors' tables on each real database."""
    url = request.getfixturevalue("sqlite_db" if request.param == "sqlite" else "postgres_db")
    use_database(url)
    yield url
    os.environ.pop("DATABASE_URL", None)


@pytest.fixture
def no_redis(monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    from bot.settings import reset_settings_cache

    reset_settings_cache()


@pytest.fixture
async def redis_client():
    if not port_open("127.0.0.1", 6379):
        unavailable("Redis is not reachable on 127.0.0.1:6379")
    import redis.asyncio as aioredis

    client = aioredis.from_url(REDIS_TEST_URL)
    prefix = f"siyu-test-{uuid.uuid4().hex[:8]}:"
    yield client, prefix
    keys = [k async for k in client.scan_iter(match=prefix + "*")]
    if keys:
        await client.delete(*keys)
    await client.close()


@pytest.fixture
async def harness(wechat_db, no_redis):
    from tests.wechat.harness import Harness, fresh_env

    h = await Harness(fresh_env()).start()
    yield h
    await h.stop()


# --- the real product (Rasa server with the trained model + action server) behind the sandbox --------
class SandboxProcess:
    """`python -m channels.wechat.sandbox serve` as a subprocess, talked to over HTTP."""

    def __init__(self, env, port: int, bot_url: str, log) -> None:
        self.env, self.port, self.bot_url, self.log = env, port, bot_url, log
        self.process = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> None:
        import subprocess
        import time

        from tests.conftest import PYTHON, REPO

        self.process = subprocess.Popen(
            [PYTHON, "-m", "channels.wechat.sandbox", "serve", "--port", str(self.port), "--bot-url", self.bot_url],
            cwd=REPO, env=self.env, stdout=open(self.log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", self.port):
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"sandbox exited: {self.log.read_text()[-2000:]}")
            time.sleep(0.2)
        raise RuntimeError("sandbox did not start")

    def stop(self) -> None:
        import signal

        from tests.support import stop_process_group

        stop_process_group(self.process, signal.SIGTERM, grace_s=10)


@pytest.fixture(scope="session")
def wechat_product(trained_model, tmp_path_factory):
    """The whole product on a seeded SQLite shop with every WeChat connector configured against a
    sandbox subprocess; yields (product, sandbox)."""
    from channels.wechat.sandbox.config import sandbox_credentials
    from tests.conftest import Product, free_port, product_env, seed

    var_dir = tmp_path_factory.mktemp("wechat_product")
    url = f"sqlite:///{var_dir / 'shop.db'}"
    seed(url)
    env = product_env(url, var_dir)
    env.update(sandbox_credentials())
    sandbox_port = free_port()
    env["SIYU_WECHAT_WORK_API_BASE"] = env["SIYU_WECHAT_MP_API_BASE"] = f"http://127.0.0.1:{sandbox_port}"
    gateway_url = f"http://127.0.0.1:{env['SIYU_WECHAT_PORT']}"
    sandbox = SandboxProcess(env, sandbox_port, gateway_url, var_dir / "sandbox.log")
    sandbox.start()
    product = Product(env, var_dir / "product.log")
    try:
        product.start()
        yield product, sandbox
    finally:
        product.stop()
        sandbox.stop()
