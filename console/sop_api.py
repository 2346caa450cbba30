"""The community SOP's JSON API (console pages under /sop/ use it; outside tools too: keep the names
and shapes of the issue's routes). Moderators, supervisors and admins; agents get 403. Business
rules live in community_sop/; this module checks input, calls it and shapes the answers."""
from __future__ import annotations

import logging
from datetime import date, datetime, timedelta, timezone
from typing import Any, Dict, List
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from aiohttp import web

from actions.db.engine import async_session, in_transaction
from bot.settings import get_settings
from channels.wechat.models import WeChatGroup
from community_sop import (
    firing,
    keyword_replies as keywords,
    moderation_queue,
    plans,
    quotas,
    runlog,
    schedule as rules,
)
from community_sop.models import RUN_STATES, SopPlan, SopRun, SopSchedulerState, now_utc
from community_sop.rendering import GroupInfo, render
from console.auth import error, require

logger = logging.getLogger("console.sop_api")
routes = web.RouteTableDef()
SOP_ROLES = ("moderator", "supervisor", "admin")
PREVIEW_GROUPS = 20
SCHEDULER_ALIVE_S = 30
# a plan's run counts cover this much of its history (the run log itself has all of it)
RUNS_WINDOW = timedelta(days=30)


def _tz() -> str:
    return get_settings().shop.timezone


def _int(request: web.Request, name: str = "id") -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise web.HTTPNotFound(text='{"error": "没有这条记录"}', content_type="application/json")


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "请求体不是有效的 JSON"}', content_type="application/json")


def _group_json(group: WeChatGroup) -> Dict[str, Any]:
    return {"chat_id": group.chat_id, "name": group.name, "owner": group.owner_userid or "",
            "owner_name": group.owner_name or "", "tags": list(group.tags or []), "members": group.member_count or 0,
            "delivery_mode": group.delivery_mode, "robot": bool(group.robot_key),
            "dissolved": group.dissolved_at is not None}


@routes.get("/api/sop/groups")
@require(*SOP_ROLES)
async def groups(request: web.Request) -> web.Response:
    async with async_session() as s:
        found = list((await s.execute(sa.select(WeChatGroup).order_by(WeChatGroup.chat_id))).scalars())
    tags = sorted({t for g in found for t in (g.tags or [])})
    return web.json_response({"groups": [_group_json(g) for g in found], "tags": tags})


async def _plan_json(s, plan: SopPlan, with_warnings: bool = False) -> Dict[str, Any]:
    out = plans.to_json(plan)
    out["next_due"] = _next_due(plan, _tz(), datetime.now(timezone.utc))
    targets = await plans.target_groups(s, plan.targets)
    out["targets_count"] = len(targets)
    counts = dict((await s.execute(sa.select(SopRun.status, sa.func.count()).where(
        SopRun.plan_id == plan.id, SopRun.due_at >= now_utc() - RUNS_WINDOW).group_by(SopRun.status))).all())
    out["runs"] = {state: counts.get(state, 0) for state in RUN_STATES}
    if with_warnings:
        out["warnings"] = await _warnings(s, plan.delivery, plan.schedule, plan.targets, plan.content, plan.variants,
                                          exclude=plan.id)
    return out


async def _warnings(s, delivery: str, schedule: Dict, targets: Dict, content: List, variants: List,
                    exclude: int | None = None) -> List[str]:
    found = await plans.target_groups(s, targets, include_dissolved=True)
    others = [p for p in await plans.listing(s) if p.id != exclude]
    other_targets = {}
    for plan in others:
        if plan.delivery == "mass_send" and plan.active:
            other_targets[plan.id] = [g.chat_id for g in await plans.target_groups(s, plan.targets)]
    sample = next((g for g in found if g.dissolved_at is None), None)
    per_post = 1
    if sample is not None:
        post = await render(s, {"content": content, "variants": variants}, GroupInfo.of(sample),
                            datetime.now(timezone.utc), _tz())
        per_post = len(post.for_robot())
    notes = quotas.warnings(delivery, schedule, found, per_post, others, other_targets, _tz())
    missing = plans.missing_chat_ids(targets, found)
    if missing:
        notes.insert(0, f"这些群 ID 不存在：{'、'.join(missing[:5])}")
    return notes


async def _plan_response(plan_id: int, status: int = 200, with_warnings: bool = True) -> web.Response:
    async with async_session() as s:
        plan = await plans.get(s, plan_id)
        return web.json_response(await _plan_json(s, plan, with_warnings), status=status)


def _plan_error(exc: plans.PlanError) -> web.Response:
    return error(exc.status, str(exc))


@routes.get("/api/sop/plans")
@require(*SOP_ROLES)
async def plan_list(request: web.Request) -> web.Response:
    """Every plan with its next due time, how many groups it reaches and its runs by status: three
    queries whatever the number of plans (a shop with 1,000 groups may have thousands)."""
    tz = _tz()
    now = datetime.now(timezone.utc)
    async with async_session() as s:
        found = await plans.listing_rows(s)
        live = (await s.execute(sa.select(WeChatGroup.chat_id, WeChatGroup.tags, WeChatGroup.owner_userid).where(
            WeChatGroup.dissolved_at.is_(None)))).all()
        counts = await s.execute(sa.select(SopRun.plan_id, SopRun.status, sa.func.count()).where(
            SopRun.due_at >= now_utc() - RUNS_WINDOW).group_by(SopRun.plan_id, SopRun.status))
    by_plan: Dict[int, Dict[str, int]] = {}
    for plan_id, status, n in counts.all():
        by_plan.setdefault(plan_id, {})[status] = n
    index = plans.TargetIndex(live)
    out = []
    # plans share schedules (every group's 10:00 post): one trigger computation per distinct schedule
    next_due: Dict[tuple, Any] = {}
    for plan in found:
        item = plans.to_json(plan)
        key = (repr(sorted(plan.schedule.items())), plan.starts_at, plan.ends_at, plan.active)
        if key not in next_due:
            next_due[key] = _next_due(plan, tz, now)
        item["next_due"] = next_due[key]
        item["targets_count"] = index.count(plan.targets)
        runs = by_plan.get(plan.id, {})
        item["runs"] = {state: runs.get(state, 0) for state in RUN_STATES}
        out.append(item)
    return web.json_response({"plans": out})


def _next_due(plan: SopPlan, tz: str, now: datetime):
    if not plan.active:
        return None
    try:
        upcoming = list(rules.due_times(rules.plan_trigger(plan, tz), now, now + timedelta(days=400), limit=1))
    except (ValueError, rules.ScheduleError):
        return None
    return upcoming[0].isoformat() if upcoming else None


@routes.post("/api/sop/plans")
@require(*SOP_ROLES)
async def plan_create(request: web.Request) -> web.Response:
    try:
        data = plans.check(await _body(request))
        plan = await in_transaction(lambda s: plans.create(s, data, request["staff"].username))
    except plans.PlanError as exc:
        return _plan_error(exc)
    return await _plan_response(plan.id, status=201)


@routes.get("/api/sop/plans/{id}")
@require(*SOP_ROLES)
async def plan_get(request: web.Request) -> web.Response:
    try:
        return await _plan_response(_int(request))
    except plans.PlanError as exc:
        return _plan_error(exc)


@routes.put("/api/sop/plans/{id}")
@require(*SOP_ROLES)
async def plan_update(request: web.Request) -> web.Response:
    plan_id = _int(request)
    try:
        data = plans.check(await _body(request))
        await in_transaction(lambda s: plans.update(s, plan_id, data, request["staff"].username))
        return await _plan_response(plan_id)
    except plans.PlanError as exc:
        return _plan_error(exc)


@routes.delete("/api/sop/plans/{id}")
@require(*SOP_ROLES)
async def plan_delete(request: web.Request) -> web.Response:
    plan_id = _int(request)
    try:
        await in_transaction(lambda s: plans.delete(s, plan_id, request["staff"].username))
    except plans.PlanError as exc:
        return _plan_error(exc)
    return web.json_response({"ok": True})


@routes.post("/api/sop/plans/{id}/active")
@require(*SOP_ROLES)
async def plan_active(request: web.Request) -> web.Response:
    plan_id = _int(request)
    body = await _body(request)
    if not isinstance(body, dict) or not isinstance(body.get("active"), bool):
        return error(400, "需要 active：true 或 false")
    try:
        await in_transaction(lambda s: plans.set_active(s, plan_id, body["active"], request["staff"].username))
        return await _plan_response(plan_id)
    except plans.PlanError as exc:
        return _plan_error(exc)


@routes.post("/api/sop/preview")
@require(*SOP_ROLES)
async def preview(request: web.Request) -> web.Response:
    """What each target group would receive if the plan fired now (live prices), and the warnings."""
    body = await _body(request)
    if isinstance(body, dict) and not body.get("name"):
        body = dict(body, name="预览")
    try:
        data = plans.check(dict(body, active=False) if isinstance(body, dict) else body)
    except plans.PlanError as exc:
        return _plan_error(exc)
    tz = _tz()
    now = datetime.now(timezone.utc)
    async with async_session() as s:
        found = await plans.target_groups(s, data.targets)
        out = []
        for group in found[:PREVIEW_GROUPS]:
            post = await render(s, {"content": data.content, "variants": data.variants}, GroupInfo.of(group), now, tz)
            shown = post.preview()
            shown["problems"] = post.problems_for(data.delivery)
            text, attachments = post.for_mass_send()
            out.append({"chat_id": group.chat_id, "name": group.name, "tags": list(group.tags or []),
                        **shown, "mass_send": {"text": text, "attachments": attachments},
                        "reminder": post.for_reminder(group.name or group.chat_id),
                        "mode_warnings": post.warnings(data.delivery)})
        notes = await _warnings(s, data.delivery, data.schedule, data.targets, data.content, data.variants)
    next_due = [d.isoformat() for d in rules.due_times(rules.plan_trigger(data, tz), now, now + timedelta(days=400),
                                                        limit=5)]
    return web.json_response({"groups": out, "targets_count": len(found), "warnings": notes, "next_due": next_due})


@routes.get("/api/sop/plans/{id}/runs")
@require(*SOP_ROLES)
async def plan_runs(request: web.Request) -> web.Response:
    plan_id = _int(request)
    status = request.query.get("status") or None
    if status is not None and status not in RUN_STATES:
        return error(400, f"status 只能是 {'|'.join(RUN_STATES)}")
    async with async_session() as s:
        try:
            await plans.get(s, plan_id)
        except plans.PlanError as exc:
            deleted = await s.get(SopPlan, plan_id)
            if deleted is None:
                return _plan_error(exc)
        return web.json_response({"runs": await runlog.runs(s, plan_id, status)})


@routes.post("/api/sop/runs/{id}/retry")
@require(*SOP_ROLES)
async def run_retry(request: web.Request) -> web.Response:
    from channels.wechat.outbound.sender import OutboxOnly

    try:
        run = await firing.retry(_int(request), request["staff"].username, tz=_tz(), runtime=OutboxOnly())
    except plans.PlanError as exc:
        return _plan_error(exc)
    return web.json_response(runlog.run_json(run))


@routes.get("/api/sop/failures")
@require(*SOP_ROLES)
async def failures(request: web.Request) -> web.Response:
    async with async_session() as s:
        return web.json_response({"runs": await runlog.failures(s, now_utc() - timedelta(days=7))})


@routes.get("/api/sop/calendar")
@require(*SOP_ROLES)
async def calendar_view(request: web.Request) -> web.Response:
    tz = _tz()
    try:
        start_day = date.fromisoformat(request.query["start"]) if request.query.get("start") else \
            datetime.now(ZoneInfo(tz)).date()
        days = max(1, min(int(request.query.get("days", 7)), 42))
    except ValueError:
        return error(400, "start 需要 YYYY-MM-DD，days 需要 1-42 的整数")
    start = datetime(start_day.year, start_day.month, start_day.day, tzinfo=ZoneInfo(tz))
    async with async_session() as s:
        entries = await runlog.calendar(s, start - timedelta(microseconds=1), start + timedelta(days=days), tz)
    return web.json_response({"entries": entries, "start": start_day.isoformat(), "days": days})


@routes.get("/api/sop/metrics")
@require(*SOP_ROLES)
async def metrics(request: web.Request) -> web.Response:
    tz = _tz()
    try:
        count = max(1, min(int(request.query.get("days", 7)), 60))
    except ValueError:
        return error(400, "days 需要 1-60 的整数")
    today = datetime.now(ZoneInfo(tz)).date()
    days = [today - timedelta(days=n) for n in range(count - 1, -1, -1)]
    async with async_session() as s:
        return web.json_response({"days": await runlog.metrics(s, days, tz),
                                  "groups": await runlog.group_metrics(s, today, tz)})


@routes.get("/api/sop/scheduler")
@require(*SOP_ROLES)
async def scheduler_state(request: web.Request) -> web.Response:
    async with async_session() as s:
        state = await s.get(SopSchedulerState, "sop")
    if state is None:
        return web.json_response({"leader": None, "seen_at": None, "alive": False})
    alive = state.seen_at > now_utc() - timedelta(seconds=SCHEDULER_ALIVE_S)
    return web.json_response({"leader": state.leader, "seen_at": state.seen_at.isoformat() + "Z", "alive": alive})


# --- moderation queue ----------------------------------------------------------------------------------
@routes.get("/api/sop/moderation")
@require(*SOP_ROLES)
async def moderation_list(request: web.Request) -> web.Response:
    status = request.query.get("status") or "open"
    if status not in moderation_queue.STATES:
        return error(400, f"status 只能是 {'|'.join(moderation_queue.STATES)}")
    async with async_session() as s:
        hits = await moderation_queue.listing(s, status)
        counts = await moderation_queue.counts(s)
    return web.json_response({"hits": hits, "counts": counts})


@routes.post("/api/sop/moderation/{id}")
@require(*SOP_ROLES)
async def moderation_mark(request: web.Request) -> web.Response:
    body = await _body(request)
    status = body.get("status") if isinstance(body, dict) else None
    if status not in ("handled", "false_alarm"):
        return error(400, "status 只能是 handled 或 false_alarm")
    hit_id = _int(request)
    try:
        hit = await in_transaction(lambda s: moderation_queue.mark(s, hit_id, status, request["staff"].username))
    except moderation_queue.HitError as exc:
        return error(exc.status, str(exc))
    return web.json_response(hit)


# --- keyword auto-replies ------------------------------------------------------------------------------
@routes.get("/api/sop/keywords")
@require(*SOP_ROLES)
async def keyword_list(request: web.Request) -> web.Response:
    async with async_session() as s:
        return web.json_response({"replies": [keywords.to_json(r) for r in await keywords.listing(s)]})


@routes.post("/api/sop/keywords")
@require(*SOP_ROLES)
async def keyword_create(request: web.Request) -> web.Response:
    try:
        data = keywords.check(await _body(request))
        reply = await in_transaction(lambda s: keywords.create(s, data, request["staff"].username))
    except keywords.KeywordError as exc:
        return error(exc.status, str(exc))
    return web.json_response(keywords.to_json(reply), status=201)


@routes.put("/api/sop/keywords/{id}")
@require(*SOP_ROLES)
async def keyword_update(request: web.Request) -> web.Response:
    reply_id = _int(request)
    try:
        data = keywords.check(await _body(request))
        reply = await in_transaction(lambda s: keywords.update(s, reply_id, data, request["staff"].username))
    except keywords.KeywordError as exc:
        return error(exc.status, str(exc))
    return web.json_response(keywords.to_json(reply))


@routes.delete("/api/sop/keywords/{id}")
@require(*SOP_ROLES)
async def keyword_delete(request: web.Request) -> web.Response:
    reply_id = _int(request)
    try:
        await in_transaction(lambda s: keywords.delete(s, reply_id, request["staff"].username))
    except keywords.KeywordError as exc:
        return error(exc.status, str(exc))
    return web.json_response({"ok": True})

