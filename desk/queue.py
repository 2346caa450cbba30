"""What staff do with conversations: claim, assign and transfer, hand back to the bot, end, snooze,
reopen. Each change is one conditional UPDATE (a conversation changes only from the state the
caller expects, so two agents claiming at once get one winner), an append-only desk event and an
audit row, in the caller's transaction. Pausing Rasa is the caller's next step (desk/service.py)."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Dict, List, Optional, Sequence, Tuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.repositories import audit_repository
from desk.models import ASSIGNED, BOT, CLOSED, QUEUED, STATES, DeskConversation, DeskEvent, StaffUser, now_utc
from desk.staff import DESK_ROLES, SUPERVISING_ROLES

logger = logging.getLogger("desk.queue")


@dataclass(frozen=True)
class Staff:
    username: str
    role: str

    @property
    def actor(self) -> str:
        return f"staff:{self.username}"

    @property
    def supervises(self) -> bool:
        return self.role in SUPERVISING_ROLES


class DeskError(Exception):
    status = 400


class NotFound(DeskError):
    status = 404


class Forbidden(DeskError):
    status = 403


class Conflict(DeskError):
    """Someone else holds the conversation, or it is not in a state that allows this."""
    status = 409


async def get(session: AsyncSession, conversation: int) -> DeskConversation:
    row = await session.get(DeskConversation, conversation, populate_existing=True)
    if row is None:
        raise NotFound("没有这个会话")
    return row


def record(session: AsyncSession, row: DeskConversation, kind: str, actor: str,
           detail: Optional[Dict[str, Any]] = None, audit: bool = True) -> None:
    session.add(DeskEvent(conversation=row.id, kind=kind, actor=actor, detail=detail or {}))
    if audit and actor.startswith("staff:"):
        audit_repository.record(session, actor, f"desk_{kind}", f"conversation:{row.id}", detail, level=logging.INFO)


async def _move(session: AsyncSession, row: DeskConversation, allowed: Sequence[str],
                extra: Optional[Any] = None, **values: Any) -> bool:
    stmt = sa.update(DeskConversation).where(DeskConversation.id == row.id, DeskConversation.state.in_(allowed))
    if extra is not None:
        stmt = stmt.where(extra)
    result = await session.execute(stmt.values(updated_at=now_utc(), **values)
                                   .execution_options(synchronize_session=False))
    if result.rowcount:
        await session.refresh(row)
    return bool(result.rowcount)


def _new_episode(row: DeskConversation, now) -> Dict[str, Any]:
    """A person takes a conversation nobody queued (from the bot, or ended): a new handoff starts now."""
    return {"episode": DeskConversation.episode + 1, "queued_at": now, "reason": row.reason or "taken_over",
            "first_response_at": None, "closed_at": None}


async def claim(session: AsyncSession, conversation: int, staff: Staff) -> DeskConversation:
    """Take a waiting conversation (or one the bot is having) for oneself."""
    if staff.role not in DESK_ROLES:
        raise Forbidden("只有客服和主管可以接入会话")
    row = await get(session, conversation)
    previous = row.state
    now = now_utc()
    values: Dict[str, Any] = {"state": ASSIGNED, "assignee": staff.username, "assigned_at": now}
    if previous != QUEUED:  # taken over from the bot or reopened: a new episode starts now
        values.update(_new_episode(row, now))
    if not await _move(session, row, (QUEUED, BOT, CLOSED), DeskConversation.assignee.is_(None)
                       if previous == QUEUED else None, **values):
        current = await get(session, conversation)
        holder = f"（{current.assignee} 已接入）" if current.assignee else ""
        raise Conflict(f"会话已被他人接入{holder}")
    record(session, row, "claimed", staff.actor, {"from": previous})
    return row


async def assign(session: AsyncSession, conversation: int, to: str, staff: Staff) -> DeskConversation:
    """A supervisor gives a conversation to an agent; an agent passes on one they hold (transfer)."""
    row = await get(session, conversation)
    if not staff.supervises and not (row.state == ASSIGNED and row.assignee == staff.username):
        raise Forbidden("只有主管可以分配他人的会话")
    target = (await session.execute(sa.select(StaffUser).where(StaffUser.username == to))).scalars().first()
    if target is None or target.disabled or target.role not in DESK_ROLES:
        raise DeskError(f"{to} 不是可接待的客服")
    previous, holder = row.state, row.assignee
    now = now_utc()
    values: Dict[str, Any] = {"state": ASSIGNED, "assignee": to, "assigned_at": now}
    if previous not in (QUEUED, ASSIGNED):
        values.update(_new_episode(row, now))
    guard = DeskConversation.assignee == holder if holder else DeskConversation.assignee.is_(None)
    if not await _move(session, row, (QUEUED, ASSIGNED, BOT, CLOSED), guard, **values):
        raise Conflict("会话刚被他人改动，请刷新后再试")
    record(session, row, "transferred" if previous == ASSIGNED else "assigned", staff.actor,
           {"from": holder, "to": to})
    return row


def _holds(row: DeskConversation, staff: Staff) -> None:
    if row.state != ASSIGNED:
        raise Conflict("会话不在人工接待中")
    if row.assignee != staff.username and not staff.supervises:
        raise Forbidden(f"会话由 {row.assignee} 接待")


async def handback(session: AsyncSession, conversation: int, staff: Staff) -> DeskConversation:
    """Give the conversation back to the bot: it answers the customer's next message."""
    row = await get(session, conversation)
    _holds(row, staff)
    if not await _move(session, row, (ASSIGNED,), DeskConversation.assignee == row.assignee, state=BOT,
                       assignee=None, snoozed_until=None):
        raise Conflict("会话刚被他人改动，请刷新后再试")
    record(session, row, "handed_back", staff.actor)
    return row


async def close(session: AsyncSession, conversation: int, staff: Staff) -> DeskConversation:
    """End the handling (resolved); the customer's next message goes to the bot."""
    row = await get(session, conversation)
    if row.state == QUEUED and staff.supervises:
        pass
    else:
        _holds(row, staff)
    if not await _move(session, row, (ASSIGNED, QUEUED), None, state=CLOSED, assignee=None, closed_at=now_utc(),
                       snoozed_until=None):
        raise Conflict("会话刚被他人改动，请刷新后再试")
    record(session, row, "closed", staff.actor)
    return row


async def snooze(session: AsyncSession, conversation: int, minutes: int, staff: Staff) -> DeskConversation:
    """Put a held conversation aside until a time (or until the customer writes)."""
    row = await get(session, conversation)
    _holds(row, staff)
    minutes = max(1, min(int(minutes), 7 * 24 * 60))
    row.snoozed_until = now_utc() + timedelta(minutes=minutes)
    row.updated_at = now_utc()
    record(session, row, "snoozed", staff.actor, {"minutes": minutes})
    return row


async def revert(session: AsyncSession, row: DeskConversation, to_state: str, assignee: Optional[str],
                 why: str) -> None:
    """Undo a change the Rasa server could not be told about (the bot would have disagreed)."""
    await _move(session, row, STATES, None, state=to_state, assignee=assignee)
    record(session, row, "reverted", "system", {"state": to_state, "why": why[:200]})


SORT = (DeskConversation.priority.desc(), DeskConversation.queued_at.asc(), DeskConversation.id.asc())


async def listing(session: AsyncSession, *, state: Optional[str] = None, assignee: Optional[str] = None,
                  limit: int = 200, offset: int = 0) -> List[DeskConversation]:
    """Conversations by priority, then by how long they have waited."""
    stmt = sa.select(DeskConversation)
    if state:
        stmt = stmt.where(DeskConversation.state == state)
    if assignee:
        stmt = stmt.where(DeskConversation.assignee == assignee)
    if state in (BOT, CLOSED):
        recent = sa.func.coalesce(DeskConversation.last_customer_at, DeskConversation.updated_at)
        stmt = stmt.order_by(recent.desc(), DeskConversation.id.desc())
    else:
        stmt = stmt.order_by(*SORT)
    return list((await session.execute(stmt.limit(limit).offset(offset))).scalars())


async def tab_counts(session: AsyncSession) -> Tuple[Dict[str, int], Dict[str, int]]:
    """(conversations by state, conversations held by each assignee): every user's tab numbers."""
    by_state = dict((await session.execute(sa.select(DeskConversation.state, sa.func.count()).group_by(
        DeskConversation.state))).all())
    holders = dict((await session.execute(sa.select(DeskConversation.assignee, sa.func.count()).where(
        DeskConversation.state == ASSIGNED).group_by(DeskConversation.assignee))).all())
    return by_state, holders
