"""The community SOP pages for group moderators (server-rendered, Chinese): the plans with their
editor and live preview, one plan's execution log, the week's calendar of posts, the moderation
queue, keyword auto-replies and the groups' numbers. Like the desk pages they carry only who is
logged in and fixed labels; what they show comes from the JSON API under /api/sop/ through
console/static/sop.js and each page's own script. Moderators, supervisors and admins may open them;
anyone else gets 403."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Dict
from zoneinfo import ZoneInfo

from aiohttp import web

from bot.settings import get_settings
from console.pages import SECURITY_HEADERS, SOP_HOME, _page, nav_for

routes = web.RouteTableDef()

SOP_ROLES = ("moderator", "supervisor", "admin")
DEFAULT_TZ = "Asia/Shanghai"


def _allowed(request: web.Request) -> None:
    if request["staff"].role not in SOP_ROLES:
        raise web.HTTPForbidden(text="没有权限", headers=SECURITY_HEADERS)


def _clock() -> Dict[str, Any]:
    """The shop's time zone for the scripts: its name, today there and its UTC offset ("+08:00")."""
    try:
        tz = get_settings().shop.timezone or DEFAULT_TZ
        zone = ZoneInfo(tz)
    except Exception:  # noqa: BLE001 - a broken shop file must not keep moderators out
        tz, zone = DEFAULT_TZ, ZoneInfo(DEFAULT_TZ)
    now = datetime.now(timezone.utc).astimezone(zone)
    offset = now.strftime("%z")
    return {"tz": tz, "today": now.date().isoformat(), "utc_offset": f"{offset[:3]}:{offset[3:]}"}


async def _sop_page(request: web.Request, template: str, path: str, title: str, **extra: Any) -> web.Response:
    _allowed(request)
    return await _page(request, template, path, title, nav=nav_for(request["staff"].role), sop=True,
                       **_clock(), **extra)


@routes.get("/sop")
async def sop_no_slash(request: web.Request) -> web.Response:
    raise web.HTTPFound(SOP_HOME)


@routes.get("/sop/")
async def plans_page(request: web.Request) -> web.Response:
    """SOP 计划: the plans, failures at a glance, the editor (drawer) with its live preview."""
    return await _sop_page(request, "sop_plans.html", "/sop/", "SOP 计划")


@routes.get(r"/sop/plans/{id:\d+}")
async def runs_page(request: web.Request) -> web.Response:
    """执行记录 of one plan: every group's post with its status, refreshed every few seconds."""
    return await _sop_page(request, "sop_runs.html", "/sop/", "执行记录", plan_id=int(request.match_info["id"]))


@routes.get("/sop/calendar")
async def calendar_page(request: web.Request) -> web.Response:
    """发送日历: the posts due in a week across plans, as a 7-column grid."""
    return await _sop_page(request, "sop_calendar.html", "/sop/calendar", "发送日历")


@routes.get("/sop/moderation")
async def moderation_page(request: web.Request) -> web.Response:
    """违规消息: what the group watch flagged, to handle or dismiss."""
    return await _sop_page(request, "sop_moderation.html", "/sop/moderation", "违规消息")


@routes.get("/sop/keywords")
async def keywords_page(request: web.Request) -> web.Response:
    """关键词自动回复 in groups."""
    return await _sop_page(request, "sop_keywords.html", "/sop/keywords", "关键词回复")


@routes.get("/sop/metrics")
async def metrics_page(request: web.Request) -> web.Response:
    """社群数据: posts, check-ins, active members and moderation hits by day and by group."""
    return await _sop_page(request, "sop_metrics.html", "/sop/metrics", "社群数据")
