"""Notices what other processes did, for the console's live updates: new desk events (a handoff the
action server queued, a claim in another browser) and new customer messages in Rasa's tracker
store. Both are append-only tables read in id order from a stored position, so a restarted
console neither misses nor repeats anything. Every conversation seen gets its desk row (state bot)."""
from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Awaitable, Callable, Dict, List, Optional

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.engine import in_transaction
from actions.identity import customer_for
from bot.settings import get_settings
from desk import sla
from desk.handoff import ensure_conversation
from desk.models import ASSIGNED, QUEUED, DeskConversation, DeskCursor, DeskEvent
from desk.transcript import RASA_EVENTS, desk_step, from_epoch, iso, rasa_rows

logger = logging.getLogger("desk.watcher")
Publish = Callable[[Dict[str, Any]], Awaitable[None]]
BATCH = 500


async def _position(s: AsyncSession, name: str, start: Callable[[], Awaitable[int]]) -> int:
    cursor = await s.get(DeskCursor, name)
    if cursor is None:
        cursor = DeskCursor(name=name, position=await start())
        s.add(cursor)
        await s.flush()
    return int(cursor.position)


async def _set(s: AsyncSession, name: str, position: int) -> None:
    await s.execute(sa.update(DeskCursor).where(DeskCursor.name == name).values(position=position))


class Watcher:
    def __init__(self, publish: Publish, interval_s: float = 0.5, sla_every_s: float = 5.0) -> None:
        self.publish = publish
        self.interval_s = interval_s
        self.sla_every_s = sla_every_s
        self._sla_checked = 0.0
        self._stop = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = await self.step()
            except Exception:  # noqa: BLE001 - a database hiccup must not end live updates
                logger.exception("desk watcher step failed")
                busy = False
            if not busy:
                try:
                    await asyncio.wait_for(self._stop.wait(), self.interval_s)
                except asyncio.TimeoutError:
                    pass

    async def step(self) -> bool:
        """One look at both sources; True when a full batch was read (look again at once)."""
        loop_time = asyncio.get_running_loop().time()
        if loop_time - self._sla_checked >= self.sla_every_s:
            self._sla_checked = loop_time
            shop = get_settings().shop
            await in_transaction(lambda s: sla.record_breaches(s, shop))
        outgoing: List[Dict[str, Any]] = []
        full = await in_transaction(lambda s: self._read(s, outgoing))
        for event in outgoing:
            await self.publish(event)
        return full

    async def _read(self, s: AsyncSession, outgoing: List[Dict[str, Any]]) -> bool:
        outgoing.clear()
        full_customer = await self._customer_messages(s, outgoing)
        full_desk = await self._desk_events(s, outgoing)
        return full_customer or full_desk

    async def _desk_events(self, s: AsyncSession, outgoing: List[Dict[str, Any]]) -> bool:
        async def latest() -> int:
            return (await s.execute(sa.select(sa.func.max(DeskEvent.id)))).scalar() or 0

        after = await _position(s, "desk_events", latest)
        events = list((await s.execute(sa.select(DeskEvent).where(DeskEvent.id > after).order_by(DeskEvent.id)
                                       .limit(BATCH))).scalars())
        if not events:
            return False
        rows = {r.id: r for r in (await s.execute(sa.select(DeskConversation).where(
            DeskConversation.id.in_({e.conversation for e in events})))).scalars()}
        for event in events:
            row = rows.get(event.conversation)
            outgoing.append({"type": "desk", "kind": event.kind, "conversation": event.conversation,
                             "conversation_id": row.conversation_id if row else None,
                             "channel": row.channel if row else None,
                             "actor": event.actor, "state": row.state if row else None,
                             "assignee": row.assignee if row else None, "priority": row.priority if row else None,
                             "customer": (row.customer_name or row.conversation_id) if row else None,
                             "reason": row.reason if row else None, "at": iso(event.at),
                             "detail": event.detail or {},
                             "text": desk_step(event)["text"]})
        await _set(s, "desk_events", events[-1].id)
        return len(events) == BATCH

    async def _customer_messages(self, s: AsyncSession, outgoing: List[Dict[str, Any]]) -> bool:
        async def latest() -> int:
            try:
                async with s.begin_nested():
                    return (await s.execute(sa.select(sa.func.max(RASA_EVENTS.c.id)))).scalar() or 0
            except sa.exc.DBAPIError:
                return 0

        after = await _position(s, "rasa_events", latest)
        rows = await rasa_rows(s, after=after, limit=BATCH, types=("user",))
        if not rows:
            return False
        seen: Dict[str, DeskConversation] = {}
        for event in rows:
            row = seen.get(event.sender_id)
            if row is None:
                row = await self._conversation(s, event.sender_id)
                seen[event.sender_id] = row
            row.last_customer_at = from_epoch(event.timestamp)
            if row.state in (QUEUED, ASSIGNED):
                row.snoozed_until = None
                outgoing.append({"type": "message", "conversation": row.id, "state": row.state,
                                 "conversation_id": row.conversation_id, "channel": row.channel,
                                 "assignee": row.assignee, "customer": row.customer_name or row.conversation_id,
                                 "text": _text(event.data), "at": iso(row.last_customer_at)})
        await _set(s, "rasa_events", rows[-1].id)
        return len(rows) == BATCH

    @staticmethod
    async def _conversation(s: AsyncSession, conversation_id: str) -> DeskConversation:
        customer = await customer_for(s, conversation_id)
        return await ensure_conversation(s, conversation_id, customer_id=customer.id if customer else None,
                                         customer_name=customer.name if customer else "")


def _text(data: Optional[str]) -> str:
    try:
        return (json.loads(data or "{}").get("text") or "")[:200]
    except ValueError:
        return ""
