"""access_token caches. Each secret has one token that every process shares: in Redis when
REDIS_URL is set (refreshed under a Redis lock with a double check, so N processes seeing an
expired token cause one fetch, not N), in process memory otherwise (an asyncio lock per token).

Refreshing after the platform rejected a token is compare-and-swap: a caller that saw token T
rejected only fetches if the cache still holds T; if another caller already replaced it, the new
token is used. This keeps a burst of 42001s from invalidating freshly fetched tokens.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Dict, Optional, Protocol, Tuple

logger = logging.getLogger("channels.wechat.outbound.tokens")

# (token, lifetime in seconds) from the platform's token endpoint
Fetch = Callable[[], Awaitable[Tuple[str, int]]]
LOCK_TIMEOUT_S = 15


def cache_lifetime(expires_in: int) -> float:
    """Stop using a token a little before the platform does (10 %, at most 5 minutes)."""
    return max(expires_in - min(300.0, expires_in * 0.1), 0.5)


@dataclass
class TokenSource:
    """One credential: a stable cache name ("wecom:<corp>:kf", "mp:<appid>") and how to fetch a token."""

    name: str
    fetch: Fetch


class TokenCache(Protocol):
    async def get(self, source: TokenSource) -> str: ...

    async def refresh(self, source: TokenSource, rejected: str) -> str: ...


class MemoryTokenCache:
    def __init__(self) -> None:
        self._tokens: Dict[str, Tuple[str, float]] = {}
        self._locks: Dict[str, asyncio.Lock] = {}
        self.fetches = 0

    def _valid(self, name: str) -> Optional[str]:
        entry = self._tokens.get(name)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    async def get(self, source: TokenSource) -> str:
        token = self._valid(source.name)
        if token:
            return token
        async with self._locks.setdefault(source.name, asyncio.Lock()):
            token = self._valid(source.name)  # double check: another task may have fetched meanwhile
            if token:
                return token
            return await self._fetch(source)

    async def refresh(self, source: TokenSource, rejected: str) -> str:
        async with self._locks.setdefault(source.name, asyncio.Lock()):
            token = self._valid(source.name)
            if token and token != rejected:
                return token
            return await self._fetch(source)

    async def _fetch(self, source: TokenSource) -> str:
        token, expires_in = await source.fetch()
        self.fetches += 1
        self._tokens[source.name] = (token, time.monotonic() + cache_lifetime(expires_in))
        logger.info("access_token fetched", extra={"credential": source.name, "expires_in": expires_in})
        return token


# how long a process uses the shared token it read from Redis before asking Redis again: every
# platform call would otherwise cost a Redis round trip. A token that another process replaced
# meanwhile costs at most one rejected call, after which refresh() reads the new one from Redis.
LOCAL_COPY_S = 60.0


class RedisTokenCache:
    """Tokens in Redis under <prefix>wechat:token:<name>, expiring with the token; each process
    keeps what it read for up to LOCAL_COPY_S (never past the token's own expiry)."""

    def __init__(self, redis, prefix: str = "siyu:", local_copy_s: float = LOCAL_COPY_S) -> None:
        self.redis = redis
        self.prefix = prefix
        self.local_copy_s = local_copy_s
        self._local: Dict[str, Tuple[str, float]] = {}
        self.fetches = 0

    def _key(self, name: str) -> str:
        return f"{self.prefix}wechat:token:{name}"

    async def _cached(self, name: str) -> Optional[str]:
        async with self.redis.pipeline(transaction=False) as pipe:
            value, ttl_ms = await pipe.get(self._key(name)).pttl(self._key(name)).execute()
        if value is None:
            self._local.pop(name, None)
            return None
        token = value.decode() if isinstance(value, bytes) else value
        self._keep(name, token, ttl_ms / 1000 if ttl_ms and ttl_ms > 0 else 0.0)
        return token

    def _keep(self, name: str, token: str, lifetime_s: float) -> None:
        self._local[name] = (token, time.monotonic() + min(self.local_copy_s, lifetime_s))

    async def get(self, source: TokenSource) -> str:
        entry = self._local.get(source.name)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        token = await self._cached(source.name)
        if token:
            return token
        async with self.redis.lock(self._key(source.name) + ":lock", timeout=LOCK_TIMEOUT_S,
                                   blocking_timeout=LOCK_TIMEOUT_S):
            token = await self._cached(source.name)  # double check under the lock
            if token:
                return token
            return await self._fetch(source)

    async def refresh(self, source: TokenSource, rejected: str) -> str:
        self._local.pop(source.name, None)  # rejected: whatever this process kept is no good
        async with self.redis.lock(self._key(source.name) + ":lock", timeout=LOCK_TIMEOUT_S,
                                   blocking_timeout=LOCK_TIMEOUT_S):
            token = await self._cached(source.name)
            if token and token != rejected:
                return token
            return await self._fetch(source)

    async def _fetch(self, source: TokenSource) -> str:
        token, expires_in = await source.fetch()
        self.fetches += 1
        await self.redis.set(self._key(source.name), token, px=int(cache_lifetime(expires_in) * 1000))
        self._keep(source.name, token, cache_lifetime(expires_in))
        logger.info("access_token fetched", extra={"credential": source.name, "expires_in": expires_in,
                                                   "cache": "redis"})
        return token
