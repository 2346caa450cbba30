"""The nudges' JSON API: shop events in (`POST /api/events`, a bearer token instead of a staff
session), rules (supervisors and admins), the per-rule report, segments, and a customer's nudge log
and consent (every staff role). Outside tools drive these names and shapes: keep them. Business
rules live in nudges/; this module checks input, calls it and shapes the answers."""
from __future__ import annotations

import hmac
import logging
from datetime import timedelta
from typing import Any, Dict

import sqlalchemy as sa
from aiohttp import web

from actions.db.engine import async_session, in_transaction
from actions.db.models import Customer
from bot.settings import get_settings
from console.auth import error, require
from nudges import consent, events, report, rules as rulebook
from nudges.models import NudgeEvent, NudgeRule, NudgeState, iso_z, now_utc

logger = logging.getLogger("console.nudges_api")
routes = web.RouteTableDef()
RULE_ROLES = ("supervisor", "admin")
STAFF_ROLES = ("agent", "supervisor", "admin")
MAX_EVENTS_BODY = 2 * 1024 * 1024


def _token_ok(request: web.Request) -> bool:
    wanted = get_settings().events_token
    offered = request.headers.get("Authorization", "")
    if wanted is None or not offered.startswith("Bearer "):
        return False
    return hmac.compare_digest(offered[len("Bearer "):].strip().encode(), wanted.get_secret_value().encode())


@routes.post("/api/events")
async def post_events(request: web.Request) -> web.Response:
    """One event, or {"events": [...]}: 202 with what was accepted; 400 with the reason when
    nothing in the body could be accepted; 401 without the shop's token."""
    if not _token_ok(request):
        logger.warning("events refused: bad or missing token", extra={"client": request.remote})
        return error(401, "需要有效的事件令牌（Authorization: Bearer <SIYU_EVENTS_TOKEN>）")
    if request.content_length and request.content_length > MAX_EVENTS_BODY:
        return error(413, "请求体太大：一次最多 1000 个事件")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "请求体不是有效的 JSON")
    try:
        result = await events.ingest(body)
    except events.EventError as exc:
        return error(400, str(exc))
    if result.rejected and not result.accepted:
        return error(400, result.rejected[0]["reason"], rejected=result.rejected)
    return web.json_response({"accepted": result.accepted, "duplicates": result.duplicates,
                              "rejected": result.rejected}, status=202)


async def _json(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "请求体不是有效的 JSON"}', content_type="application/json")


def _rule_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(text='{"error": "没有这条规则"}', content_type="application/json")


async def _rule_step(request: web.Request, work) -> web.Response:
    """Run `work(session, rule_row)` on the URL's rule in a transaction; its JSON, or the error."""
    rule_id = _rule_id(request)

    async def run(s):
        row = await s.get(NudgeRule, rule_id)
        if row is None or row.deleted_at is not None:
            raise rulebook.RuleError("没有这条规则", 404)
        result = await work(s, row)
        return result if result is not None else rulebook.to_json(row)

    try:
        return web.json_response(await in_transaction(run))
    except rulebook.RuleError as exc:
        return error(exc.status, str(exc))


@routes.get("/api/nudges/rules")
@require(*RULE_ROLES)
async def list_rules(request: web.Request) -> web.Response:
    async with async_session() as s:
        rows = await rulebook.listing(s)
    return web.json_response({"rules": [rulebook.to_json(r) for r in rows], "event_types": list(rulebook.EVENT_TYPES),
                              "exits": rulebook.EXITS, "priorities": list(rulebook.PRIORITIES),
                              "variables": list(rulebook.VARIABLES), "personas": list(rulebook.PERSONAS)})


@routes.post("/api/nudges/rules")
@require(*RULE_ROLES)
async def create_rule(request: web.Request) -> web.Response:
    body = await _json(request)
    by = request["staff"].username

    async def run(s):
        return rulebook.to_json(await rulebook.create(s, body, by))

    try:
        return web.json_response(await in_transaction(run), status=201)
    except rulebook.RuleError as exc:
        return error(exc.status, str(exc))


@routes.get("/api/nudges/rules/export")
@require(*RULE_ROLES)
async def export_rules(request: web.Request) -> web.Response:
    async with async_session() as s:
        rows = await rulebook.listing(s)
    return web.json_response({"rules": [r.definition for r in rows]},
                             headers={"Content-Disposition": 'attachment; filename="nudge-rules.json"'})


@routes.post("/api/nudges/rules/import")
@require(*RULE_ROLES)
async def import_rules(request: web.Request) -> web.Response:
    body = await _json(request)
    by = request["staff"].username
    try:
        return web.json_response(await in_transaction(lambda s: rulebook.import_rules(s, body, by)))
    except rulebook.RuleError as exc:
        return error(exc.status, str(exc))


@routes.get("/api/nudges/rules/{id}")
@require(*RULE_ROLES)
async def get_rule(request: web.Request) -> web.Response:
    async def work(s, row):
        return None
    return await _rule_step(request, work)


@routes.put("/api/nudges/rules/{id}")
@require(*RULE_ROLES)
async def update_rule(request: web.Request) -> web.Response:
    body = await _json(request)
    by = request["staff"].username

    async def work(s, row):
        await rulebook.update(s, row, body, by)
    return await _rule_step(request, work)


@routes.delete("/api/nudges/rules/{id}")
@require(*RULE_ROLES)
async def delete_rule(request: web.Request) -> web.Response:
    by = request["staff"].username

    async def work(s, row):
        await rulebook.delete(s, row, by)
        return {"deleted": True}
    return await _rule_step(request, work)


@routes.post("/api/nudges/rules/{id}/status")
@require(*RULE_ROLES)
async def rule_status(request: web.Request) -> web.Response:
    body = await _json(request)
    by = request["staff"].username

    async def work(s, row):
        await rulebook.set_status(s, row, str(body.get("status", "")) if isinstance(body, dict) else "", by)
    return await _rule_step(request, work)


@routes.post("/api/nudges/rules/{id}/approve")
@require(*RULE_ROLES)
async def approve_rule(request: web.Request) -> web.Response:
    by = request["staff"].username

    async def work(s, row):
        await rulebook.approve(s, row, by)
    return await _rule_step(request, work)


@routes.get("/api/nudges/report")
@require(*RULE_ROLES)
async def rule_report(request: web.Request) -> web.Response:
    try:
        days = int(request.query.get("days", "90"))
    except ValueError:
        return error(400, "days 需要是整数")
    if not 1 <= days <= 366:
        return error(400, "days 需要在 1-366 之间")
    async with async_session() as s:
        found = await report.rule_report(s, request.query.get("rule") or None, since=now_utc() - timedelta(days=days))
    return web.json_response({"days": days, "rules": found})


async def _customer(s, number: str) -> Customer:
    customer = (await s.execute(sa.select(Customer).where(Customer.external_id == number))).scalars().first()
    if customer is None:
        raise web.HTTPNotFound(text='{"error": "没有这位客户"}', content_type="application/json")
    return customer


@routes.get("/api/nudges/log")
@require(*STAFF_ROLES)
async def nudge_log(request: web.Request) -> web.Response:
    number = request.query.get("customer", "").strip()
    if not number:
        return error(400, "需要 customer（客户编号，如 C10002）")
    async with async_session() as s:
        customer = await _customer(s, number)
        entries = await report.customer_log(s, customer.id)
    return web.json_response({"customer": number, "entries": entries})


@routes.get("/api/nudges/customers/{number}")
@require(*STAFF_ROLES)
async def customer_profile(request: web.Request) -> web.Response:
    from nudges import segments

    async with async_session() as s:
        customer = await _customer(s, request.match_info["number"])
        return web.json_response({
            "customer": {"external_id": customer.external_id, "name": customer.name, "level": customer.level,
                         "tags": list(customer.tags or [])},
            "consent": consent.state(customer), "consent_history": await consent.history(s, customer.id),
            "segment": await segments.profile(s, customer.id),
            "entries": await report.customer_log(s, customer.id)})


@routes.post("/api/nudges/customers/{number}/consent")
@require(*STAFF_ROLES)
async def change_consent(request: web.Request) -> web.Response:
    """Staff record the customer's own choice (they asked by phone, in a chat...)."""
    body = await _json(request)
    if not isinstance(body, dict) or not isinstance(body.get("granted"), bool):
        return error(400, "需要 {\"category\": \"marketing|transactional\", \"granted\": true|false}")
    by = request["staff"].username

    async def run(s):
        customer = await _customer(s, request.match_info["number"])
        await consent.set_consent(s, customer, str(body.get("category", "marketing")), body["granted"], f"staff:{by}")
        return consent.state(customer)

    try:
        return web.json_response(await in_transaction(run))
    except consent.ConsentError as exc:
        return error(400, str(exc))


@routes.get("/api/nudges/events")
@require(*RULE_ROLES)
async def recent_events(request: web.Request) -> web.Response:
    async with async_session() as s:
        rows = (await s.execute(sa.select(NudgeEvent).order_by(NudgeEvent.id.desc()).limit(100))).scalars().all()
        counts = dict((await s.execute(sa.select(NudgeEvent.status, sa.func.count()).group_by(
            NudgeEvent.status))).all())
    return web.json_response({"counts": counts, "events": [
        {"id": r.event_id, "type": r.type, "customer": r.customer, "ref": r.ref, "at": iso_z(r.at),
         "status": r.status, "note": r.note, "source": r.source} for r in rows]})


@routes.get("/api/nudges/segments")
@require(*RULE_ROLES)
async def segment_counts(request: web.Request) -> web.Response:
    from nudges.models import CustomerSegment

    async with async_session() as s:
        counts = dict((await s.execute(sa.select(CustomerSegment.segment, sa.func.count()).group_by(
            CustomerSegment.segment))).all())
        health = (await s.execute(sa.select(sa.func.avg(CustomerSegment.health)))).scalar()
        state = await s.get(NudgeState, "segments")
    return web.json_response({"counts": counts, "average_health": round(float(health), 1) if health is not None
                              else None, "last": state.value if state else None})


@routes.post("/api/nudges/demo/play")
@require(*RULE_ROLES)
async def play_demo_day(request: web.Request) -> web.Response:
    """Demo shops only: a day of shop events, as the shop's back-end would post them."""
    if not get_settings().demo:
        return error(404, "只有演示模式可以回放演示事件")
    from nudges.demo import play_in_process

    result: Dict[str, Any] = await play_in_process()
    return web.json_response(result, status=202)
