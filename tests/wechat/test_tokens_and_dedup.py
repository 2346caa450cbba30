"""Token caches (in-process and Redis shared by processes: one fetch under a lock, double check,
compare-and-swap refresh) and Redis dedup, against the real Redis on this machine."""
from __future__ import annotations

import asyncio

import pytest

from channels.wechat.inbound.inbox import RedisDedup
from channels.wechat.outbound.tokens import MemoryTokenCache, RedisTokenCache, TokenSource, cache_lifetime
from tests.wechat.harness import Harness, fresh_env


def counting_source(name: str = "wecom:test:kf", lifetime: int = 7200, delay: float = 0.05):
    calls = []

    async def fetch():
        calls.append(1)
        await asyncio.sleep(delay)  # the platform takes a moment: concurrent callers pile up
        return f"token-{len(calls)}", lifetime

    return TokenSource(name, fetch), calls


async def test_memory_cache_fetches_once_for_concurrent_callers():
    cache = MemoryTokenCache()
    source, calls = counting_source()
    tokens = await asyncio.gather(*(cache.get(source) for _ in range(50)))
    assert set(tokens) == {"token-1"} and len(calls) == 1


async def test_memory_refresh_is_compare_and_swap():
    cache = MemoryTokenCache()
    source, calls = counting_source()
    first = await cache.get(source)
    refreshed = await asyncio.gather(*(cache.refresh(source, first) for _ in range(20)))
    assert set(refreshed) == {"token-2"} and len(calls) == 2, "20 callers saw token-1 rejected: one fetch"
    assert await cache.refresh(source, "token-1") == "token-2", "a stale rejection does not refetch"


async def test_memory_cache_expires_with_the_token():
    cache = MemoryTokenCache()
    source, calls = counting_source(lifetime=1, delay=0)
    assert await cache.get(source) == "token-1"
    await asyncio.sleep(cache_lifetime(1) + 0.1)
    assert await cache.get(source) == "token-2"


@pytest.mark.redis
async def test_redis_cache_is_shared_by_processes_and_fetches_once(redis_client):
    client, prefix = redis_client
    source, calls = counting_source()
    # two caches on one Redis stand for two processes of the product
    caches = [RedisTokenCache(client, prefix), RedisTokenCache(client, prefix)]
    tokens = await asyncio.gather(*(caches[n % 2].get(source) for n in range(40)))
    assert set(tokens) == {"token-1"} and len(calls) == 1
    ttl = await client.pttl(f"{prefix}wechat:token:{source.name}")
    assert 0 < ttl <= cache_lifetime(7200) * 1000


@pytest.mark.redis
async def test_redis_refresh_is_compare_and_swap_across_processes(redis_client):
    client, prefix = redis_client
    source, calls = counting_source()
    a, b = RedisTokenCache(client, prefix), RedisTokenCache(client, prefix)
    first = await a.get(source)
    refreshed = await asyncio.gather(*([a.refresh(source, first) for _ in range(10)] +
                                       [b.refresh(source, first) for _ in range(10)]))
    assert set(refreshed) == {"token-2"} and len(calls) == 2


@pytest.mark.redis
async def test_redis_token_is_kept_in_process_between_platform_calls(redis_client):
    client, prefix = redis_client
    source, calls = counting_source()
    a = RedisTokenCache(client, prefix)
    assert await a.get(source) == "token-1"
    await client.delete(f"{prefix}wechat:token:{source.name}")
    assert await a.get(source) == "token-1" and len(calls) == 1, "the next call does not ask Redis again"
    assert await RedisTokenCache(client, prefix).get(source) == "token-2", "another process reads Redis"


@pytest.mark.redis
async def test_redis_token_replaced_by_another_process_costs_one_rejection(redis_client):
    client, prefix = redis_client
    source, calls = counting_source()
    a, b = RedisTokenCache(client, prefix), RedisTokenCache(client, prefix)
    assert await a.get(source) == "token-1"
    assert await b.refresh(source, "token-1") == "token-2"
    assert await a.get(source) == "token-1", "process a still uses its copy until the platform rejects it"
    assert await a.refresh(source, "token-1") == "token-2" and len(calls) == 2, "then it takes b's, no fetch"
    assert await a.get(source) == "token-2"


@pytest.mark.redis
async def test_redis_token_copy_never_outlives_the_token(redis_client):
    client, prefix = redis_client
    source, calls = counting_source(lifetime=1, delay=0)
    a = RedisTokenCache(client, prefix)
    assert await a.get(source) == "token-1"
    await asyncio.sleep(cache_lifetime(1) + 0.1)
    assert await a.get(source) == "token-2" and len(calls) == 2


@pytest.mark.redis
async def test_redis_dedup_first_time_then_duplicate(redis_client):
    client, prefix = redis_client
    dedup = RedisDedup(client, ttl_s=60, prefix=prefix)
    assert await dedup.first_time("mp", "123") is True
    assert await dedup.first_time("mp", "123") is False
    assert await dedup.first_time("mini", "123") is True, "keys are per channel"
    await dedup.forget("mp", "123")
    assert await dedup.first_time("mp", "123") is True


async def test_redis_unreachable_falls_back_to_the_database():
    import redis.asyncio as aioredis

    dead = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    assert await RedisDedup(dead, 60).first_time("mp", "1") is None
    await dead.close()


@pytest.mark.redis
async def test_connectors_with_redis_answer_three_identical_deliveries_once(wechat_db, redis_client, monkeypatch):
    client, prefix = redis_client
    from channels.wechat.sandbox.callbacks import CallbackSigner
    from tests.conftest import REDIS_TEST_URL

    monkeypatch.setenv("REDIS_URL", REDIS_TEST_URL)
    h = await Harness(fresh_env(), redis_prefix=prefix).start()
    try:
        assert h.runtime.redis is not None
        message = {"ToUserName": "gh_x", "FromUserName": "oRedis", "CreateTime": int(h.platform.now()),
                   "MsgType": "text", "Content": "发货了吗", "MsgId": 998877}
        h.platform.user_acted("mp", "oRedis")
        signed = CallbackSigner(h.platform.config).account_message("mp", message)
        answers = await asyncio.gather(*(h.http.post(signed.url(h.bot_url), data=signed.body) for _ in range(3)))
        assert [a.status for a in answers] == [200, 200, 200]
        await h.wait_for(lambda: h.deliveries("mp", "oRedis"))
        await h.quiet()
        assert len(h.deliveries("mp", "oRedis")) == 1
        assert await client.exists(f"{prefix}wechat:dedup:mp:998877")
        assert await client.exists(f"{prefix}wechat:token:mp:{h.platform.config.mp_app_id}")
    finally:
        await h.stop()


@pytest.mark.redis
async def test_a_callback_stored_too_slowly_is_still_answered_exactly_once(wechat_db, redis_client, monkeypatch):
    """The acknowledgement budget runs out while the message is being stored: the platform gets a 503
    and retries. The store is not cut off half-way (which left the message marked as seen in Redis
    but not stored, so the retry was dropped and the customer never got an answer)."""
    client, prefix = redis_client
    from channels.wechat.inbound import callback as connector
    from channels.wechat.sandbox.callbacks import CallbackSigner
    from tests.conftest import REDIS_TEST_URL

    monkeypatch.setenv("REDIS_URL", REDIS_TEST_URL)
    monkeypatch.setattr(connector, "ACK_BUDGET_S", 0.0001)
    h = await Harness(fresh_env(), redis_prefix=prefix).start()
    try:
        message = {"ToUserName": "gh_x", "FromUserName": "oSlow", "CreateTime": int(h.platform.now()),
                   "MsgType": "text", "Content": "发货了吗", "MsgId": 5544332211}
        h.platform.user_acted("mp", "oSlow")
        signed = CallbackSigner(h.platform.config).account_message("mp", message)
        first = await h.http.post(signed.url(h.bot_url), data=signed.body)
        assert first.status == 503, "over the budget: the platform is asked to retry"
        await h.quiet()
        retry = await h.http.post(signed.url(h.bot_url), data=signed.body)
        assert retry.status in (200, 503)
        await h.wait_for(lambda: h.deliveries("mp", "oSlow"))
        await h.quiet()
        assert len(h.deliveries("mp", "oSlow")) == 1
        assert len(h.agent.received) == 1
    finally:
        await h.stop()
