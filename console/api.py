"""The console's JSON API (the pages use it; other tools integrate with it: keep the names and
shapes of the documented routes). Errors are {"error": "..."} with 400 / 401 / 403 / 404 / 409 /
503; every change goes through desk.service, which records who did what."""
from __future__ import annotations

import logging
from datetime import date
from typing import Any, Dict

import sqlalchemy as sa
from aiohttp import web

from actions.db.engine import async_session, in_transaction
from bot.settings import get_settings
from console.auth import error, require
from desk import (
    corrections as desk_corrections,
    queue as desk_queue,
    staff as staff_accounts,
    stats as desk_stats,
    training as desk_training,
)
from desk.context import customer_context
from desk.labels import labels
from desk.models import STATES, CannedReply, DeskConversation
from desk.queue import DeskError
from desk.service import DeskService
from desk.staff import DESK_ROLES, SUPERVISING_ROLES, StaffError

logger = logging.getLogger("console.api")
routes = web.RouteTableDef()


def _service(request: web.Request) -> DeskService:
    return request.app["desk"]


def _id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise web.HTTPNotFound(text='{"error": "没有这个会话"}', content_type="application/json")


async def _body(request: web.Request) -> Dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "请求体不是有效的 JSON"}', content_type="application/json")
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "请求体必须是 JSON 对象"}', content_type="application/json")
    return body


async def _run(coro) -> web.Response:
    try:
        return web.json_response(await coro)
    except DeskError as exc:
        return error(exc.status, str(exc))
    except StaffError as exc:
        return error(400, str(exc))


@routes.get("/api/desk/conversations")
async def conversations(request: web.Request) -> web.Response:
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        return error(400, f"state 只能是 {'|'.join(STATES)}")
    assignee = request["staff"].username if request.query.get("mine") in ("1", "true") else \
        request.query.get("assignee") or None
    try:
        limit = max(1, min(int(request.query.get("limit", 200)), 500))
        offset = max(0, int(request.query.get("offset", 0)))
    except ValueError:
        return error(400, "limit / offset 必须是整数")
    shared = request.app["lists"]
    items = await shared.get(("list", state, assignee, limit, offset),
                             lambda: _service(request).listing(state, assignee, limit, offset))
    counts = await shared.get("counts", _counts)
    by_state, holders = counts
    username = request["staff"].username
    return web.json_response({"conversations": items, "counts": {
        "queued": by_state.get("queued", 0), "mine": holders.get(username, 0), "assigned": by_state.get("assigned", 0),
        "bot": by_state.get("bot", 0), "closed": by_state.get("closed", 0)}})


async def _counts():
    """(conversations by state, held conversations by assignee): the tab counts of every user."""
    async with async_session() as s:
        return await desk_queue.tab_counts(s)


@routes.get("/api/desk/conversations/{id}")
async def conversation(request: web.Request) -> web.Response:
    return await _run(_service(request).detail(_id(request)))


@routes.get("/api/desk/conversations/{id}/context")
async def context(request: web.Request) -> web.Response:
    async def read() -> Dict[str, Any]:
        async with async_session() as s:
            row = await desk_queue.get(s, _id(request))
            return await customer_context(s, row)
    return await _run(read())


@routes.post("/api/desk/conversations/{id}/claim")
@require(*DESK_ROLES)
async def claim(request: web.Request) -> web.Response:
    return await _run(_service(request).claim(_id(request), request["staff"]))


@routes.post("/api/desk/conversations/{id}/reply")
async def reply(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body.get("text"), str):
        return error(400, "需要 text")
    try:
        result = await _service(request).reply(_id(request), body["text"], request["staff"])
    except DeskError as exc:
        return error(exc.status, str(exc))
    # 202 while it is on its way; 200 once settled: delivered, or not sent (refused / failed, and why)
    return web.json_response(result, status=202 if result["delivery"] == "queued" else 200)


@routes.post("/api/desk/conversations/{id}/handback")
async def handback(request: web.Request) -> web.Response:
    return await _run(_service(request).handback(_id(request), request["staff"]))


@routes.post("/api/desk/conversations/{id}/end")
async def end(request: web.Request) -> web.Response:
    return await _run(_service(request).end(_id(request), request["staff"]))


@routes.post("/api/desk/conversations/{id}/snooze")
async def snooze(request: web.Request) -> web.Response:
    body = await _body(request)
    minutes = body.get("minutes", 30)
    if not isinstance(minutes, int) or minutes <= 0:
        return error(400, "minutes 必须是正整数")
    return await _run(_service(request).snooze(_id(request), minutes, request["staff"]))


@routes.post("/api/desk/conversations/{id}/note")
async def note(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body.get("text"), str):
        return error(400, "需要 text")
    return await _run(_service(request).note(_id(request), body["text"], request["staff"]))


@routes.post("/api/desk/conversations/{id}/assign")
@require(*DESK_ROLES)
async def assign(request: web.Request) -> web.Response:
    body = await _body(request)
    if not isinstance(body.get("to"), str):
        return error(400, "需要 to（客服用户名）")
    return await _run(_service(request).assign(_id(request), body["to"], request["staff"]))


@routes.post("/api/desk/presence")
@require(*DESK_ROLES)
async def presence(request: web.Request) -> web.Response:
    body = await _body(request)

    async def work(s):
        user = await staff_accounts.set_presence(s, request["staff"].username, str(body.get("presence")))
        return {"username": user.username, "presence": user.presence}
    return await _run(in_transaction(work))


@routes.get("/api/desk/staff")
async def staff_list(request: web.Request) -> web.Response:
    async with async_session() as s:
        users = await staff_accounts.listing(s)
        load = dict((await s.execute(sa.select(DeskConversation.assignee, sa.func.count()).where(
            DeskConversation.state == "assigned").group_by(DeskConversation.assignee))).all())
    return web.json_response({"staff": [
        {"username": u.username, "display_name": u.display_name, "role": u.role, "presence": u.presence,
         "disabled": u.disabled, "holding": load.get(u.username, 0)}
        for u in users if u.role in DESK_ROLES]})


@routes.get("/api/desk/canned")
async def canned(request: web.Request) -> web.Response:
    q = (request.query.get("q") or "").strip()
    stmt = sa.select(CannedReply).order_by(CannedReply.title)
    if q:
        like = f"%{q[:50]}%"
        stmt = stmt.where(sa.or_(CannedReply.title.like(like), CannedReply.text.like(like)))
    async with async_session() as s:
        items = (await s.execute(stmt.limit(50))).scalars()
        return web.json_response({"canned": [{"id": c.id, "title": c.title, "text": c.text} for c in items]})


@routes.post("/api/desk/canned")
@require(*SUPERVISING_ROLES)
async def add_canned(request: web.Request) -> web.Response:
    body = await _body(request)
    title, text = str(body.get("title") or "").strip(), str(body.get("text") or "").strip()
    if not title or not text or len(title) > 64:
        return error(400, "需要标题（≤64 字）和内容")

    async def work(s):
        exists = (await s.execute(sa.select(CannedReply.id).where(CannedReply.title == title))).scalar()
        if exists:
            raise StaffError("已有同名快捷回复")
        reply = CannedReply(title=title, text=text[:2000], created_by=request["staff"].username)
        s.add(reply)
        await s.flush()
        return {"id": reply.id, "title": reply.title, "text": reply.text}
    return await _run(in_transaction(work))


@routes.get("/api/desk/stats")
async def stats(request: web.Request) -> web.Response:
    """Daily numbers; ?day=YYYY-MM-DD (the shop's time zone), today by default."""
    shop = get_settings().shop
    day = None
    if request.query.get("day"):
        try:
            day = date.fromisoformat(request.query["day"])
        except ValueError:
            return error(400, "day 的格式是 YYYY-MM-DD")
    async with async_session() as s:
        return web.json_response(await desk_stats.daily(s, shop, day))


# --- 错题本 and retraining ----------------------------------------------------------------------
@routes.post("/api/desk/conversations/{id}/corrections")
@require(*DESK_ROLES)
async def correct(request: web.Request) -> web.Response:
    """Mark a bot turn wrong: {"event_id", "intent"?, "kb_entry"?, "answer"?, "question"?, "note"?}."""
    body = await _body(request)
    if not isinstance(body.get("event_id"), int):
        return error(400, "需要 event_id（要纠正的那条消息）")
    fields = {k: body.get(k) for k in ("intent", "kb_entry", "answer", "question")}
    if any(v is not None and not isinstance(v, str) for v in fields.values()):
        return error(400, "intent / kb_entry / answer / question 必须是字符串")
    fields = {k: (v.strip() or None) if isinstance(v, str) else None for k, v in fields.items()}

    async def work(s):
        row = await desk_queue.get(s, _id(request))
        made = await desk_corrections.correct(s, row, request["staff"], body["event_id"],
                                              note=str(body.get("note") or ""), **fields)
        return {"id": made.id, "text": made.text, "wrong_intent": made.wrong_intent,
                "right_intent": made.right_intent, "kb_correction_id": made.kb_correction_id}
    return await _run(in_transaction(work))


@routes.get("/api/desk/corrections")
async def corrections(request: web.Request) -> web.Response:
    async with async_session() as s:
        return web.json_response({"corrections": await desk_corrections.listing(s)})


@routes.get("/api/desk/intents")
async def intents(request: web.Request) -> web.Response:
    names = labels("intent")
    known = desk_corrections.known_intents()
    return web.json_response({"intents": known, "labels": {i: names.get(i, i) for i in known}})


@routes.get("/api/desk/knowledge")
async def knowledge_entries(request: web.Request) -> web.Response:
    """Knowledge entries to pick the right answer from: ?q= searches questions and answers."""
    from knowledge.models import KnowledgeEntry

    q = (request.query.get("q") or "").strip()[:50]
    stmt = sa.select(KnowledgeEntry.id, KnowledgeEntry.question, KnowledgeEntry.category).order_by(KnowledgeEntry.id)
    if q:
        like = f"%{q}%"
        stmt = stmt.where(sa.or_(KnowledgeEntry.question.like(like), KnowledgeEntry.answer.like(like),
                                 KnowledgeEntry.id.like(like)))
    async with async_session() as s:
        rows = (await s.execute(stmt.limit(30))).all()
    return web.json_response({"entries": [{"id": i, "question": qu, "category": c} for i, qu, c in rows]})


@routes.post("/api/desk/training")
@require(*SUPERVISING_ROLES)
async def start_training(request: web.Request) -> web.Response:
    try:
        return web.json_response(await request.app["trainer"].start(request["staff"]), status=202)
    except DeskError as exc:
        return error(exc.status, str(exc))


@routes.get("/api/desk/training")
async def training_status(request: web.Request) -> web.Response:
    return web.json_response({"models": await desk_training.recent()})


@routes.post("/api/desk/training/{id}/activate")
@require(*SUPERVISING_ROLES)
async def activate_model(request: web.Request) -> web.Response:
    return await _run(desk_training.activate(_id(request), request["staff"]))
