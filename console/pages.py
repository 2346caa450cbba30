"""The staff pages (server-rendered, Chinese): the login form, the escalation desk's workspace, the
错题本 (corrections and, for supervisors, retraining) and the day's numbers. The pages carry only who
is logged in (name, role, CSRF token) and fixed labels; everything else they show comes from the
JSON API (console/api.py) and live updates (console/live.py) through console/static/common.js and
the page's own script (desk.js, corrections.js, stats.js). The community SOP pages are in
console/sop_pages.py; moderators, who do not work conversations, are sent there."""
from __future__ import annotations

import re
from typing import Any, Dict
from urllib.parse import urlsplit

import aiohttp_jinja2
from aiohttp import web
from aiohttp_session import get_session

from bot.settings import get_settings
from console.auth import current_staff
from desk.handoff import PRIORITY_NAMES
from desk.labels import labels
from desk.staff import DESK_ROLES, SUPERVISING_ROLES
from desk.transcript import REASON_TEXT, SLA_TEXT

routes = web.RouteTableDef()

ROLE_NAMES = labels("role")
HOME = "/desk/"
# what staff read for the NLU's intents (desk/labels.yml)
INTENT_NAMES = labels("intent")
# the sidebar: (path, icon, name)
NAV = (("/desk/", "◧", "会话工作台"), ("/desk/corrections", "✎", "错题本"), ("/desk/stats", "▤", "今日数据"))
# the community SOP pages (console/sop_pages.py)
SOP_NAV = (("/sop/", "▦", "SOP 计划"), ("/sop/calendar", "▣", "发送日历"), ("/sop/moderation", "⚑", "违规消息"),
           ("/sop/keywords", "⌨", "关键词回复"), ("/sop/metrics", "▤", "社群数据"))
SOP_HOME = "/sop/"
# the one-on-one nudges (console/nudges_pages.py): supervisors and admins get the rules and their
# report; agents only a customer's nudge log
NUDGES_NAV = (("/nudges/", "✉", "触达"),)
NUDGE_LOG_NAV = (("/nudges/customers", "✉", "触达记录"),)
# the pages load scripts, styles and data only from this host; nothing may frame them
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; media-src 'self' data: blob:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def safe_next(target: str) -> str:
    """Where to go after logging in: a path on this host only (never `//other` or `https://other`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return HOME
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return HOME
    return target


def static_url(request: web.Request, filename: str) -> str:
    """The URL of a file under console/static, with its content hash (the app adds /static/ so)."""
    for resource in request.app.router.resources():
        if isinstance(resource, web.StaticResource) and resource.canonical == "/static":
            return str(resource.url_for(filename=filename, append_version=True))
    return f"/static/{filename}"


def _shop_name() -> str:
    try:
        return get_settings().shop.name
    except Exception:  # noqa: BLE001 - a broken shop file must not keep staff out of the desk
        return ""


def _render(template: str, request: web.Request, context: Dict[str, Any]) -> web.Response:
    context = {"asset": lambda name: static_url(request, name), **context}
    response = aiohttp_jinja2.render_template(template, request, context)
    response.headers.update(SECURITY_HEADERS)
    return response


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound(HOME)


@routes.get("/desk")
async def desk_no_slash(request: web.Request) -> web.Response:
    raise web.HTTPFound(HOME)


@routes.get("/desk/login")
async def login_page(request: web.Request) -> web.Response:
    target = safe_next(request.query.get("next", ""))
    session = await get_session(request)
    if session.get("u") and await current_staff(request) is not None:  # already logged in
        raise web.HTTPFound(target)
    return _render("login.html", request, {"next": target, "shop": _shop_name()})


def nav_for(role: str) -> tuple:
    """The sidebar of a role: moderators run groups only; supervisors and admins see both parts and
    the nudges (触达); agents the desk and customers' nudge logs (an entry whose path is None is a
    section title)."""
    if role == "moderator":
        return SOP_NAV
    if role in SUPERVISING_ROLES:
        return NAV + NUDGES_NAV + ((None, "", "社群运营"),) + SOP_NAV
    return NAV + NUDGE_LOG_NAV


async def _page(request: web.Request, template: str, path: str, title: str, nav: Any = None,
                **extra: Any) -> web.Response:
    """A staff page: the shared layout (sidebar, top bar) and the page's config for its script."""
    staff = request["staff"]
    if staff.role == "moderator" and path.startswith("/desk/"):  # moderators do not work conversations
        raise web.HTTPFound(SOP_HOME)
    session = await get_session(request)
    config = {
        "username": staff.username, "role": staff.role, "display_name": request["staff_name"],
        "presence": request["staff_presence"], "csrf_token": session.get("csrf") or "",
        "can_work": staff.role in DESK_ROLES, "supervises": staff.role in SUPERVISING_ROLES,
        "shop": _shop_name(), "reasons": REASON_TEXT, "priorities": {str(k): v for k, v in PRIORITY_NAMES.items()},
        "sla_kinds": SLA_TEXT, "intent_names": INTENT_NAMES, "page": path, **extra,
    }
    return _render(template, request, {
        "staff_name": request["staff_name"], "username": staff.username,
        "role_name": ROLE_NAMES.get(staff.role, staff.role), "presence": request["staff_presence"],
        "can_work": config["can_work"], "supervises": config["supervises"], "config": config,
        "shop": config["shop"], "nav": nav_for(staff.role) if nav is None else nav, "here": path, "title": title})


@routes.get("/desk/")
async def workspace(request: web.Request) -> web.Response:
    return await _page(request, "workspace.html", "/desk/", "会话工作台")


@routes.get("/desk/corrections")
async def corrections_page(request: web.Request) -> web.Response:
    """错题本: what staff marked wrong; supervisors retrain from it and switch the new model in."""
    return await _page(request, "corrections.html", "/desk/corrections", "错题本")


@routes.get("/desk/stats")
async def stats_page(request: web.Request) -> web.Response:
    """The day's numbers (?day=YYYY-MM-DD, the shop's time zone; today by default)."""
    from desk.stats import today

    try:
        shop_today = today(get_settings().shop).isoformat()
    except Exception:  # noqa: BLE001 - the page asks the API for the day anyway
        shop_today = ""
    day = request.query.get("day", "")
    return await _page(request, "stats.html", "/desk/stats", "今日数据", today=shop_today,
                       day=day if re.fullmatch(r"\d{4}-\d{2}-\d{2}", day) else "")
