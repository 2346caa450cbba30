"""Who is asking: staff log in with their password (argon2id, desk/staff.py) and get an encrypted
session cookie holding their name, role, session epoch and CSRF token. Every request re-checks the
account (a disabled user or a raised epoch ends the session at once); unsafe requests carry the
CSRF token in X-CSRF-Token and, if the browser sends one, an Origin of this host. Failed logins
are limited per user name and per client address."""
from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import defaultdict, deque
from typing import Any, Awaitable, Callable, Deque, Dict, Optional, Tuple
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import get_session, new_session

from actions.db.engine import async_session, in_transaction
from actions.repositories import audit_repository
from desk import staff as staff_accounts
from desk.queue import Staff

logger = logging.getLogger("console.auth")
CSRF_HEADER = "X-CSRF-Token"
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# paths without a staff session: the login itself, health, static files, the model server (its own token)
# /api/events: the shop's back-end, with its own bearer token (console/nudges_api.py), not a staff session
OPEN_PATHS = ("/api/login", "/health", "/desk/login", "/static/", "/models/", "/api/events")


class LoginLimiter:
    """Failed logins per user name and per client address within a window (in this process)."""

    def __init__(self, per_user: int = 5, per_address: int = 20, window_s: float = 900) -> None:
        self.per_user, self.per_address, self.window_s = per_user, per_address, window_s
        self._failures: Dict[Tuple[str, str], Deque[float]] = defaultdict(deque)

    def _recent(self, key: Tuple[str, str]) -> Deque[float]:
        times = self._failures[key]
        cutoff = time.monotonic() - self.window_s
        while times and times[0] < cutoff:
            times.popleft()
        return times

    def blocked_for(self, username: str, address: str) -> float:
        """Seconds until another attempt is allowed (0: allowed now)."""
        waits = []
        for key, limit in ((("user", username), self.per_user), (("addr", address), self.per_address)):
            times = self._recent(key)
            if len(times) >= limit:
                waits.append(times[0] + self.window_s - time.monotonic())
        return max(waits, default=0.0)

    def failed(self, username: str, address: str) -> None:
        now = time.monotonic()
        self._failures[("user", username)].append(now)
        self._failures[("addr", address)].append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(("user", username), None)


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return error(400, "请求体不是有效的 JSON")
    if not isinstance(body, dict) or not isinstance(body.get("username"), str) or \
            not isinstance(body.get("password"), str):
        return error(400, "需要 username 和 password")
    username, password = body["username"].strip()[:64], body["password"][:256]
    limiter: LoginLimiter = request.app["login_limiter"]
    address = client_address(request)
    wait = limiter.blocked_for(username, address)
    if wait > 0:
        logger.warning("console login refused: too many failures", extra={"username": username, "remote": address})
        return web.json_response({"error": "登录失败次数过多，请稍后再试", "retry_after": int(wait) + 1}, status=429,
                                 headers={"Retry-After": str(int(wait) + 1)})

    async def check(s):
        user = await staff_accounts.authenticate(s, username, password)
        audit_repository.record(s, f"staff:{username}" if user else "anonymous",
                                "console_login" if user else "console_login_failed", f"staff:{username}",
                                {"address": address}, level=logging.INFO if user else logging.WARNING)
        return user

    user = await in_transaction(check)
    if user is None:
        limiter.failed(username, address)
        return error(401, "用户名或密码错误")
    limiter.succeeded(username)
    session = await new_session(request)  # a fresh session id on login
    token = secrets.token_urlsafe(32)
    session.update({"u": user.username, "r": user.role, "e": user.session_epoch, "csrf": token})
    return web.json_response({"username": user.username, "role": user.role, "csrf_token": token,
                              "display_name": user.display_name})


async def logout(request: web.Request) -> web.Response:
    session = await get_session(request)
    session.invalidate()
    return web.json_response({"ok": True})


async def me(request: web.Request) -> web.Response:
    staff: Staff = request["staff"]
    session = await get_session(request)
    return web.json_response({"username": staff.username, "role": staff.role, "csrf_token": session.get("csrf"),
                              "display_name": request["staff_name"], "presence": request["staff_presence"]})


async def current_staff(request: web.Request) -> Optional[Tuple[Staff, Any]]:
    """The logged-in, still-enabled user of this request (with their account row), or None."""
    session = await get_session(request)
    username = session.get("u")
    if not username:
        return None
    async with async_session() as s:
        user = await staff_accounts.by_username(s, username)
    if user is None or user.disabled or user.session_epoch != session.get("e"):
        session.invalidate()
        return None
    return Staff(user.username, user.role), user


def _csrf_ok(request: web.Request, session_token: Optional[str]) -> bool:
    offered = request.headers.get(CSRF_HEADER, "")
    if not offered or not session_token or not hmac.compare_digest(offered.encode(), session_token.encode()):
        return False
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1]
        if host != request.host:
            return False
    return True


@web.middleware
async def auth_middleware(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
    path = request.path
    if path.startswith(OPEN_PATHS) or path == "/":
        return await handler(request)
    found = await current_staff(request)
    if found is None:
        if path.startswith("/api/"):
            return error(401, "请先登录")
        raise web.HTTPFound(f"/desk/login?next={quote(request.path_qs, safe='')}")
    staff, user = found
    request["staff"], request["staff_name"], request["staff_presence"] = staff, user.display_name, user.presence
    if request.method in UNSAFE:
        session = await get_session(request)
        if not _csrf_ok(request, session.get("csrf")):
            logger.warning("console request without a valid CSRF token", extra={"username": staff.username,
                                                                               "path": path})
            return error(403, "CSRF 校验失败，请刷新页面后重试")
    return await handler(request)


def require(*roles: str):
    """Route decorator: only these roles (403 for others)."""
    def wrap(handler):
        async def checked(request: web.Request):
            if request["staff"].role not in roles:
                return error(403, "没有权限")
            return await handler(request)
        checked.__name__ = handler.__name__
        checked.__doc__ = handler.__doc__
        return checked
    return wrap
