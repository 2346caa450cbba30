"""Which gateway processes are alive, so that the inbox rows a dead one had claimed are answered
soon after it died, and those of a live one are left to it however long Rasa takes.

Each gateway process (its OutboxWorker.name, the inbox's claimed_by) writes its heartbeat to
wechat_gateway_workers every HEARTBEAT_EVERY_S. A claim whose worker has not been seen for
STALE_AFTER (four beats missed: the process was killed, crashed, or lost the database that long)
is taken over by any other process's sweeper (Inbox.missed). This, rather than a lease on the
claim, because no lease fits both sides: a short one hands a slow turn of a live process to a
second one (the turn reaches Rasa twice), a long one leaves a dead process's customers waiting.
The heartbeat only needs the event loop and the database to be responsive, which the gateway needs
anyway. Clocks: seen_at and claimed_at are written by the gateway hosts' clocks, as every time in
these tables; hosts must agree within a few seconds (NTP, which the callbacks' freshness window
needs already).
"""
from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Optional

import sqlalchemy as sa

from channels.wechat import db
from channels.wechat.db import session as async_session
from channels.wechat.models import GatewayWorker, now_utc

logger = logging.getLogger("channels.wechat.workers")
HEARTBEAT_EVERY_S = 3.0
STALE_AFTER = timedelta(seconds=12)
FORGET_AFTER = timedelta(days=1)


def alive_names(now) -> sa.sql.Select:
    """The names of the workers seen within STALE_AFTER of `now`."""
    return sa.select(GatewayWorker.name).where(GatewayWorker.seen_at >= now - STALE_AFTER)


async def beat(name: str) -> None:
    now = now_utc()
    async with db.transaction() as s:
        await s.execute(db.insert(s, GatewayWorker).values(name=name, started_at=now, seen_at=now)
                        .on_conflict_do_update(index_elements=["name"], set_={"seen_at": now}))


async def gone(name: str) -> None:
    """At a clean stop (after its claims were handed back)."""
    async with async_session() as session:
        await session.execute(sa.delete(GatewayWorker).where(GatewayWorker.name == name))
        await session.commit()


async def prune() -> int:
    """Forget workers not seen for a day (killed ones never say goodbye)."""
    async with async_session() as session:
        result = await session.execute(sa.delete(GatewayWorker).where(
            GatewayWorker.seen_at < now_utc() - FORGET_AFTER))
        await session.commit()
        return result.rowcount or 0


class Heartbeat:
    """This process's heartbeat, from start to stop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._task: Optional[asyncio.Task] = None
        self._stopping = asyncio.Event()

    async def start(self) -> None:
        try:
            await beat(self.name)  # seen before it claims anything
        except Exception:  # noqa: BLE001 - the loop tries again; until then its claims look stale
            logger.exception("wechat gateway heartbeat failed")
        self._task = asyncio.create_task(self._beat_forever(), name="wechat-heartbeat")

    async def _beat_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                await asyncio.wait_for(self._stopping.wait(), HEARTBEAT_EVERY_S)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await beat(self.name)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the heartbeat
                logger.warning("wechat gateway heartbeat failed", exc_info=True)

    async def stop(self) -> None:
        if self._task is not None:
            # a beat under way finishes (cancelled inside a database call, it could leave its
            # connection checked out)
            self._stopping.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            await gone(self.name)
        except Exception:  # noqa: BLE001 - its row is pruned later
            logger.warning("wechat gateway worker row not removed", exc_info=True)
