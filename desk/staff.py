"""Staff accounts of the console: argon2id password hashes, roles, disabling (which ends every
session of the user by raising their session epoch) and presence (online / away)."""
from __future__ import annotations

import asyncio
import logging
from typing import List, Optional

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from actions.repositories import audit_repository
from desk.models import ROLES, StaffUser, now_utc

logger = logging.getLogger("desk.staff")
_hasher = PasswordHasher()
# a hash to compare against when the user does not exist, so both cases take the same time
_DUMMY_HASH = _hasher.hash("not a password of anyone")
# roles that work conversations (and may be assigned one)
DESK_ROLES = ("agent", "supervisor", "admin")
SUPERVISING_ROLES = ("supervisor", "admin")
USERNAME_MAX = 64


class StaffError(ValueError):
    """A request about staff accounts that cannot be done (unknown role, taken name...)."""


def _check_password(password: str) -> None:
    if len(password) < 8:
        raise StaffError("密码至少 8 位")
    if len(password) > 256:
        raise StaffError("密码过长")


async def hash_password(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU on purpose: off the event loop
    return await asyncio.to_thread(_hasher.hash, password)


async def add(session: AsyncSession, username: str, password: str, role: str, *, display_name: str = "",
              actor: str = "system") -> StaffUser:
    username = username.strip()
    if not username or len(username) > USERNAME_MAX or any(c.isspace() for c in username):
        raise StaffError("用户名为 1-64 个字符，不含空格")
    if role not in ROLES:
        raise StaffError(f"角色只能是 {', '.join(ROLES)}")
    _check_password(password)
    if await by_username(session, username) is not None:
        raise StaffError(f"用户 {username} 已存在")
    user = StaffUser(username=username, display_name=(display_name or username)[:64], role=role,
                     password_hash=await hash_password(password), disabled=False, session_epoch=0, presence="away")
    session.add(user)
    audit_repository.record(session, actor, "staff_added", f"staff:{username}", {"role": role})
    await session.flush()
    return user


async def by_username(session: AsyncSession, username: str) -> Optional[StaffUser]:
    return (await session.execute(sa.select(StaffUser).where(StaffUser.username == username))).scalars().first()


async def authenticate(session: AsyncSession, username: str, password: str) -> Optional[StaffUser]:
    """The user if the password is right and the account enabled; None otherwise (same time either way)."""
    user = await by_username(session, username[:USERNAME_MAX]) if username else None
    stored = user.password_hash if user is not None else _DUMMY_HASH
    ok = await asyncio.to_thread(_verifies, stored, password)
    if not ok or user is None or user.disabled:
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
    user.last_login_at = now_utc()
    return user


async def set_password(session: AsyncSession, username: str, password: str, actor: str) -> StaffUser:
    user = await _existing(session, username)
    _check_password(password)
    user.password_hash = await hash_password(password)
    user.session_epoch += 1
    audit_repository.record(session, actor, "staff_password_changed", f"staff:{username}")
    return user


async def set_disabled(session: AsyncSession, username: str, disabled: bool, actor: str) -> StaffUser:
    user = await _existing(session, username)
    user.disabled = disabled
    if disabled:
        user.session_epoch += 1  # every open session of the user ends at its next request
        user.presence = "away"
    audit_repository.record(session, actor, "staff_disabled" if disabled else "staff_enabled", f"staff:{username}")
    return user


async def set_role(session: AsyncSession, username: str, role: str, actor: str) -> StaffUser:
    if role not in ROLES:
        raise StaffError(f"角色只能是 {', '.join(ROLES)}")
    user = await _existing(session, username)
    user.role = role
    user.session_epoch += 1
    audit_repository.record(session, actor, "staff_role_changed", f"staff:{username}", {"role": role})
    return user


async def set_presence(session: AsyncSession, username: str, presence: str) -> StaffUser:
    if presence not in ("online", "away"):
        raise StaffError("状态只能是 online 或 away")
    user = await _existing(session, username)
    if user.presence != presence:
        user.presence = presence
        audit_repository.record(session, f"staff:{username}", "staff_presence", f"staff:{username}",
                                {"presence": presence}, level=logging.INFO)
    return user


async def listing(session: AsyncSession) -> List[StaffUser]:
    return list((await session.execute(sa.select(StaffUser).order_by(StaffUser.username))).scalars())


async def _existing(session: AsyncSession, username: str) -> StaffUser:
    user = await by_username(session, username)
    if user is None:
        raise StaffError(f"没有用户 {username}")
    return user


DEMO_STAFF = (("agent1", "agent", "客服小王"), ("agent2", "agent", "客服小李"), ("lead", "supervisor", "主管老张"),
              ("moderator", "moderator", "群运营小陈"))


async def ensure_demo_staff(session: AsyncSession, password: str) -> List[str]:
    """The demo shop's staff (made once; the password follows SIYU_DEMO_STAFF_PASSWORD)."""
    made = []
    for username, role, name in DEMO_STAFF:
        user = await by_username(session, username)
        if user is None:
            await add(session, username, password, role, display_name=name, actor="system:demo")
            made.append(username)
        elif not await asyncio.to_thread(_verifies, user.password_hash, password):
            user.password_hash = await hash_password(password)
    return made


def _verifies(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
