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
import rasa.core.channels.channel  # noqa: F401,E402

asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())

from tests.conftest import (REDIS_TEST_URL, _create_pg_database, _drop_pg_database, port_open, unavailable,
                            use_database)


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
