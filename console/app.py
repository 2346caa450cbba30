"""The console application: sessions, login and CSRF (console/auth.py), the JSON API
(console/api.py; the community SOP's in console/sop_api.py; the nudges' and the shop's events in
console/nudges_api.py), live updates (console/live.py, fed by
desk/watcher.py) and the staff pages (console/pages.py, console/sop_pages.py)."""
from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Optional

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp_session import setup as setup_sessions
from aiohttp_session.cookie_storage import EncryptedCookieStorage

from actions.db.engine import dispose_async_engines
from bot.settings import Settings, get_settings
from console import api, auth, live, model_server, nudges_api, nudges_pages, pages, sop_api, sop_pages
from console.lists import SharedLists
from desk.service import DeskService
from desk.training import Trainer
from desk.watcher import Watcher

logger = logging.getLogger("console")
HERE = Path(__file__).resolve().parent
SESSION_HOURS = 12


def cookie_key(settings: Settings) -> bytes:
    secret = settings.console_secret.get_secret_value() if settings.console_secret else ""
    try:
        key = base64.urlsafe_b64decode(secret.encode()) if secret else b""
    except ValueError:
        key = b""
    if len(key) != 32:
        raise SystemExit("SIYU_CONSOLE_SECRET must be 32 url-safe base64 bytes (see README); "
                         "`python -m bot run` makes one when it is unset")
    return key


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "listeners": request.app["hub"].listeners})


def create_app(settings: Optional[Settings] = None, *, desk: Optional[DeskService] = None,
               watch_interval_s: float = 0.5) -> web.Application:
    settings = settings or get_settings()
    app = web.Application(client_max_size=2 * 1024 * 1024)
    setup_sessions(app, EncryptedCookieStorage(cookie_key(settings), cookie_name="SIYU_CONSOLE",
                                               max_age=SESSION_HOURS * 3600, httponly=True, samesite="Strict",
                                               secure=settings.console_secure_cookies))
    app.middlewares.append(auth.auth_middleware)
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True)
    app["login_limiter"] = auth.LoginLimiter()
    app["lists"] = SharedLists()
    app["hub"] = live.Hub(on_event=app["lists"].invalidate)
    app["desk"] = desk or DeskService()
    app["watch_interval_s"] = watch_interval_s
    app["trainer"] = Trainer()
    app.router.add_get("/health", health)
    app.router.add_get("/models/current", model_server.current_model)
    app.router.add_post("/api/login", auth.login)
    app.router.add_post("/api/logout", auth.logout)
    app.router.add_get("/api/me", auth.me)
    app.router.add_get("/api/desk/stream", live.stream)
    app.add_routes(api.routes)
    app.add_routes(sop_api.routes)
    app.add_routes(nudges_api.routes)
    app.add_routes(pages.routes)
    app.add_routes(sop_pages.routes)
    app.add_routes(nudges_pages.routes)
    app.router.add_static("/static/", HERE / "static", append_version=True)
    app.on_startup.append(_start_watcher)
    app.on_cleanup.append(_stop)
    return app


async def _start_watcher(app: web.Application) -> None:
    import asyncio

    await app["trainer"].recover()
    watcher = Watcher(app["hub"].publish, app["watch_interval_s"])
    app["watcher"] = watcher
    app["watcher_task"] = asyncio.create_task(watcher.run())


async def _stop(app: web.Application) -> None:
    app["watcher"].stop()
    await app["watcher_task"]
    await app["trainer"].cancel()
    await app["desk"].close()
    await dispose_async_engines()
