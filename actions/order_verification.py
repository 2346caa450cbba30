"""Anonymous order verification that guessing cannot beat.

A visitor who is not identified proves an order with the last 4 digits of its receiver's phone.
Each guess is counted before it is compared, for the order number (over every conversation and
channel) and for the client address where the channel gives one, in the transaction that reads
the locks: new conversations and parallel requests get no extra guesses. Order numbers that do not
exist are counted and locked like real ones, so no answer tells whether an order exists. A proof
belongs to the conversation that gave it and stays fresh for a limited time. Locks and lifts are
written to the audit log; an order's lock is lifted only by its owner (identified on a channel)
or by staff (`./siyu verification unlock`).
"""
from __future__ import annotations

import enum
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, List, Optional

import sqlalchemy as sa
from rasa_sdk import Tracker
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Order, VerificationGuard, utcnow
from actions.repositories import audit_repository, verification_repository as guards
from bot.settings import VerificationRules

logger = logging.getLogger("actions.order_verification")
# tasks that change the order or open an after-sales request: they need a recent proof
CHANGING_TASKS = {"cancel", "change", "return"}
# where the channels put what they know about the client (channels/im.py): never from the client itself
CLIENT_METADATA_KEY = "siyu_client"


class Outcome(str, enum.Enum):
    verified = "verified"
    wrong = "wrong"
    locked = "locked"


@dataclass(frozen=True)
class _Limit:
    key: str
    max_failures: int
    window: timedelta
    # how long the lock lasts; None: until the owner or staff lift it
    lock_for: Optional[timedelta]


def order_key(order_no: str) -> str:
    return f"order:{order_no}"


def client_key(client: str) -> str:
    return f"client:{client}"[:160]


def client_of(tracker: Tracker) -> Optional[str]:
    """The client address the channel saw for the latest message (web IM), if any."""
    metadata = tracker.latest_message.get("metadata") or {}
    known = metadata.get(CLIENT_METADATA_KEY) if isinstance(metadata, dict) else None
    address = known.get("address") if isinstance(known, dict) else None
    return address[:64] if isinstance(address, str) and address else None


def _limits(order_no: str, client: Optional[str], rules: VerificationRules) -> List[_Limit]:
    limits = [_Limit(order_key(order_no), rules.max_failures_per_order, timedelta(hours=rules.order_window_hours),
                     None)]
    if client:
        window = timedelta(minutes=rules.client_window_minutes)
        limits.append(_Limit(client_key(client), rules.max_failures_per_client, window, window))
    # every transaction takes the rows in the same order (no deadlock between two guesses)
    return sorted(limits, key=lambda limit: limit.key)


def _in_force(guard: Optional[VerificationGuard], now: datetime) -> bool:
    return (guard is not None and guard.locked_at is not None
            and (guard.locked_until is None or guard.locked_until > now))


async def is_locked(session: AsyncSession, order_no: str, client: Optional[str], rules: VerificationRules,
                    now: Optional[datetime] = None) -> bool:
    """Whether guessing for this order number, or from this client, is locked now."""
    now = now or utcnow()
    found = await guards.guards(session, [limit.key for limit in _limits(order_no, client, rules)])
    return any(_in_force(guard, now) for guard in found)


async def attempt(session: AsyncSession, order_no: str, tail: str, conversation_id: str, client: Optional[str],
                  rules: VerificationRules, now: Optional[datetime] = None) -> Outcome:
    """Check one answer for one order number, counting it first; commits."""
    now = now or utcnow()
    limits = _limits(order_no, client, rules)
    counted = [await guards.count_failure(session, limit.key, limit.window, now) for limit in limits]
    if any(_in_force(guard, now) for guard in counted):
        await session.rollback()  # a refused answer is not compared, so not counted either
        logger.info("order verification refused: locked", extra={"conversation": conversation_id})
        return Outcome.locked
    phone = (await session.execute(sa.select(Order.receiver_phone).where(Order.order_no == order_no))).scalar()
    if phone and hmac.compare_digest(phone[-4:].encode(), tail.encode()):
        for limit in limits:
            await guards.uncount_failure(session, limit.key, now)
        guards.add_proof(session, order_no, conversation_id, client, now)
        await session.commit()
        logger.info("order verified", extra={"conversation": conversation_id, "order_no": order_no})
        return Outcome.verified
    locked_now = False
    for limit, guard in zip(limits, counted):
        if guard.failures >= limit.max_failures:
            guard.locked_at = now
            guard.locked_until = now + limit.lock_for if limit.lock_for else None
            audit_repository.record(session, "system", "verification_locked", limit.key, _detail(
                guard, limit, conversation_id, client), at=now)
            locked_now = True
    await session.commit()
    logger.info("order verification failed", extra={"conversation": conversation_id, "locked": locked_now})
    return Outcome.locked if locked_now else Outcome.wrong


def _detail(guard: VerificationGuard, limit: _Limit, conversation_id: str, client: Optional[str]) -> Dict[str, Any]:
    return {"failures": guard.failures, "window_hours": round(limit.window.total_seconds() / 3600, 2),
            "until": guard.locked_until.isoformat() if guard.locked_until else "lifted by the owner or staff",
            "last_conversation": conversation_id, "last_client": client}


async def proven(session: AsyncSession, order_no: str, conversation_id: str, task: str, rules: VerificationRules,
                 now: Optional[datetime] = None) -> bool:
    """Whether this conversation proved the order recently enough for the task."""
    now = now or utcnow()
    minutes = rules.fresh_minutes_for_changes if task in CHANGING_TASKS else rules.fresh_minutes_for_status
    return await guards.proven_since(session, order_no, conversation_id, now - timedelta(minutes=minutes))


async def lift(session: AsyncSession, key: str, actor: str, now: Optional[datetime] = None) -> bool:
    """Lift a lock in force ("order:SY…" or "client:<address>") and start its count again; whether
    there was one. Commits."""
    now = now or utcnow()
    guard = await guards.get(session, key)
    if not _in_force(guard, now):
        return False
    audit_repository.record(session, actor, "verification_unlocked", key, {"failures": guard.failures,
                                                                           "locked_at": guard.locked_at.isoformat()},
                            at=now)
    guard.locked_at = guard.locked_until = None
    guard.failures, guard.window_started_at, guard.updated_at = 0, now, now
    await session.commit()
    return True


async def locks_in_force(session: AsyncSession, now: Optional[datetime] = None) -> List[VerificationGuard]:
    return await guards.locked(session, now or utcnow())


async def lift_for_owner(session: AsyncSession, order_no: str, customer_external_id: str) -> bool:
    """The order's owner, identified on a channel, asked about it: their order's lock goes."""
    return await lift(session, order_key(order_no), f"customer:{customer_external_id}")
