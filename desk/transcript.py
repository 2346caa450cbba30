"""A conversation as staff read it: what the customer wrote and what the bot understood (intent,
confidence, entities, slots such as the knowledge source) and answered, from Rasa's tracker store
(its `events` table on the shop's database), merged with what staff wrote and the desk's own
steps (queued, claimed, handed back...)."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from desk.labels import labels
from desk.models import DeskConversation, DeskEvent, DeskMessage, StaffUser

logger = logging.getLogger("desk.transcript")

# Rasa 3.6's SQL tracker store table (rasa/core/tracker_store.py SQLEvent)
RASA_EVENTS = sa.table("events", sa.column("id", sa.Integer), sa.column("sender_id", sa.String),
                       sa.column("type_name", sa.String), sa.column("timestamp", sa.Float),
                       sa.column("intent_name", sa.String), sa.column("action_name", sa.String),
                       sa.column("data", sa.Text))
SHOWN_TYPES = ("user", "bot", "slot", "pause", "resume")
# desk steps shown in the transcript, as staff read them
STEP_TEXT = labels("step")
# steps that get a line of their own (replies and notes are entries themselves)
TRANSCRIPT_STEPS = ("queued", "cancelled", "claimed", "assigned", "transferred", "handed_back", "closed",
                    "sla_breach", "snoozed", "reverted", "corrected", "reprioritised")
SLA_TEXT = labels("sla")
REASON_TEXT = labels("reason")


def iso(at: Optional[datetime]) -> Optional[str]:
    """Naive UTC -> ISO 8601 with the zone, as the API shows times."""
    if at is None:
        return None
    return at.replace(tzinfo=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_epoch(ts: Optional[float]) -> Optional[datetime]:
    """A timestamp of Rasa's events table as naive UTC, like the desk's own times."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).replace(tzinfo=None)


def _epoch_iso(ts: Optional[float]) -> Optional[str]:
    return iso(from_epoch(ts))


async def rasa_rows(session: AsyncSession, sender_ids: Sequence[str] = (), after: int = 0, limit: int = 500,
                    types: Sequence[str] = SHOWN_TYPES) -> List[Any]:
    """Rows of Rasa's events table (id order), or none if Rasa has not made the table yet."""
    stmt = sa.select(RASA_EVENTS).where(RASA_EVENTS.c.id > after, RASA_EVENTS.c.type_name.in_(types))
    if sender_ids:
        stmt = stmt.where(RASA_EVENTS.c.sender_id.in_(list(sender_ids)))
    try:
        async with session.begin_nested():
            return list((await session.execute(stmt.order_by(RASA_EVENTS.c.id).limit(limit))).all())
    except DBAPIError as exc:  # no such table: the Rasa server has not started on this database yet
        logger.debug("rasa events not readable", extra={"error": str(exc)[:200]})
        return []


def rasa_entry(row: Any) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(row.data or "{}")
    except ValueError:
        data = {}
    at = _epoch_iso(row.timestamp)
    if row.type_name == "user":
        parse = data.get("parse_data") or {}
        intent = parse.get("intent") or {}
        return {"from": "customer", "text": data.get("text") or "", "at": at, "event_id": row.id,
                "intent": intent.get("name"), "confidence": round(float(intent.get("confidence") or 0), 3),
                "entities": [{"entity": e.get("entity"), "value": e.get("value")}
                             for e in parse.get("entities") or [] if isinstance(e, dict)],
                "channel": data.get("input_channel")}
    if row.type_name == "bot":
        text = data.get("text") or ""
        buttons = [b.get("title") for b in (data.get("data") or {}).get("buttons") or [] if isinstance(b, dict)]
        if not text and not buttons:
            return None
        return {"from": "bot", "text": text, "at": at, "event_id": row.id, "buttons": buttons,
                "response": (data.get("metadata") or {}).get("utter_action")}
    if row.type_name == "slot":
        if data.get("name") in (None, "requested_slot", "handoff_queued") or data.get("value") in (None, "", []):
            return None
        return {"from": "system", "kind": "slot", "text": f"{data.get('name')} = {data.get('value')}", "at": at,
                "event_id": row.id, "slot": data.get("name"), "value": data.get("value")}
    return None


def desk_step(event: DeskEvent, names: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """A desk step as a line of the transcript (`names`: staff display names by user name)."""
    names = names or {}
    detail = event.detail or {}
    who = event.actor.removeprefix("staff:")
    who = names.get(who, who)
    template = STEP_TEXT.get(event.kind, event.kind)
    to = detail.get("to") or ""
    text = template.format(who=who, to=names.get(to, to), minutes=detail.get("minutes", ""),
                           kind=SLA_TEXT.get(detail.get("kind"), ""),
                           why=detail.get("why", ""), reason=REASON_TEXT.get(detail.get("reason"),
                                                                              detail.get("reason", "")))
    return {"from": "system", "kind": event.kind, "text": text, "at": iso(event.at)}


def staff_entry(message: DeskMessage) -> Dict[str, Any]:
    entry = {"from": "agent", "kind": message.kind, "text": message.text, "at": iso(message.created_at),
             "author": message.author, "message_id": message.id}
    if message.kind == "reply":
        entry.update(delivery=message.delivery, delivery_detail=message.delivery_detail, channel=message.channel)
    return entry


async def transcript(session: AsyncSession, row: DeskConversation, limit: int = 400) -> List[Dict[str, Any]]:
    """Everything of the conversation in time order (the latest `limit` bot/customer events)."""
    stmt = (sa.select(RASA_EVENTS).where(RASA_EVENTS.c.sender_id == row.conversation_id,
                                         RASA_EVENTS.c.type_name.in_(SHOWN_TYPES))
            .order_by(RASA_EVENTS.c.id.desc()).limit(limit))
    try:
        async with session.begin_nested():
            rows = list(reversed((await session.execute(stmt)).all()))
    except DBAPIError:
        rows = []
    entries = [e for e in (rasa_entry(r) for r in rows) if e]
    messages = (await session.execute(sa.select(DeskMessage).where(DeskMessage.conversation == row.id)
                                      .order_by(DeskMessage.id))).scalars()
    entries.extend(staff_entry(m) for m in messages)
    events = (await session.execute(sa.select(DeskEvent).where(DeskEvent.conversation == row.id,
                                                               DeskEvent.kind.in_(TRANSCRIPT_STEPS))
                                    .order_by(DeskEvent.id))).scalars()
    names = dict((await session.execute(sa.select(StaffUser.username, StaffUser.display_name))).all())
    entries.extend(desk_step(e, names) for e in events)
    # stable: entries of one second keep their source order (customer before the bot's answer)
    entries.sort(key=lambda e: e["at"] or "")
    return entries
