"""The one-on-one nudges' pages (server-rendered, Chinese): the rules (list, approval, export and
import), the rule editor (form and the whole JSON), the per-rule report (treatment against control),
a customer's nudge log and consent, and the shop's latest events with the customers' segments. Like
the desk and SOP pages they carry only who is logged in and fixed labels; what they show comes from
the JSON API (console/nudges_api.py) through console/static/nudges.js. Supervisors and admins may
open every page; agents only a customer's nudge log; anyone else gets 403."""
from __future__ import annotations

from typing import Any, Dict

from aiohttp import web

from console.pages import SECURITY_HEADERS, _page
from console.sop_pages import _clock

routes = web.RouteTableDef()

RULE_ROLES = ("supervisor", "admin")
LOG_ROLES = ("agent", "supervisor", "admin")
HOME = "/nudges/"
LOG_PAGE = "/nudges/customers"

# what staff read for the shop's event types (nudges/rules.py EVENT_TYPES)
EVENT_NAMES = {
    "cart_updated": "加购 / 改购物车", "checkout_started": "开始结算（未付款）", "order_paid": "订单付款",
    "order_shipped": "订单发货", "order_delivered": "订单签收", "logistics_stalled": "物流停滞",
    "refund_completed": "退款完成", "product_viewed": "浏览商品", "contact_added": "新加微信客服联系人",
}
AUDIENCE_NAMES = {"silent": "沉睡客户（超过自己的平均下单间隔未再下单）"}
CATEGORY_NAMES = {"transactional": "服务通知", "marketing": "营销消息"}
PRIORITY_NAMES = {"logistics": "物流", "order": "订单 / 购物车", "lifecycle": "生命周期", "promotion": "促销"}
RULE_STATUS_NAMES = {"live": "运行中", "paused": "已暂停", "pending": "待审批"}
LOG_STATUS_NAMES = {"scheduled": "已计划", "sent": "已发送", "suppressed": "已拦截", "holdout": "对照组",
                    "exited": "已退出"}
EVENT_STATUS_NAMES = {"new": "待处理", "done": "已处理", "ignored": "已忽略", "failed": "失败"}


def _labels() -> Dict[str, Any]:
    """The fixed words the scripts need: reasons, exits, event types, personas, variables..."""
    from bot.settings import get_settings
    from nudges import rules as rulebook
    from nudges.segments import SEGMENT_NAMES
    from nudges.sending import REASONS

    try:
        settings = get_settings()
        demo, shop = settings.demo, settings.shop
        holdout, attribution_days = shop.nudges.holdout_share, shop.nudges.attribution_days
        quiet = f"{shop.nudges.quiet_start}-{shop.nudges.quiet_end}"
    except Exception:  # noqa: BLE001 - a broken shop file must not keep supervisors out
        demo, holdout, attribution_days, quiet = False, 0.1, 7, ""
    return {
        "reasons": REASONS, "exits": rulebook.EXITS,
        "event_names": {kind: EVENT_NAMES.get(kind, kind) for kind in rulebook.EVENT_TYPES},
        "audiences": {kind: AUDIENCE_NAMES.get(kind, kind) for kind in rulebook.AUDIENCES},
        "categories": {kind: CATEGORY_NAMES.get(kind, kind) for kind in rulebook.CATEGORIES},
        "priority_names": {kind: PRIORITY_NAMES.get(kind, kind) for kind in rulebook.PRIORITIES},
        "personas": list(rulebook.PERSONAS), "variables": list(rulebook.VARIABLES),
        "segment_names": list(SEGMENT_NAMES), "rule_status": RULE_STATUS_NAMES, "log_status": LOG_STATUS_NAMES,
        "event_status": EVENT_STATUS_NAMES, "max_text": rulebook.MAX_TEXT, "demo": demo,
        "default_holdout": holdout, "default_attribution_days": attribution_days, "quiet_hours": quiet,
    }


async def _nudges_page(request: web.Request, template: str, view: str, title: str, roles=RULE_ROLES,
                       **extra: Any) -> web.Response:
    role = request["staff"].role
    if role not in roles:
        raise web.HTTPForbidden(text="没有权限", headers=SECURITY_HEADERS)
    supervises = role in RULE_ROLES
    # the sidebar has one 触达 entry for supervisors (the pages' own tabs lead on); agents' is the log
    here = HOME if supervises else LOG_PAGE
    labels = _labels()
    # the shop's labels go under their own key: the desk's `reasons` (handoff reasons) stay as they are
    return await _page(request, template, here, title, nudges=labels, view=view, tabs=supervises,
                       **_clock(), **extra)


@routes.get("/nudges")
async def nudges_no_slash(request: web.Request) -> web.Response:
    raise web.HTTPFound(HOME)


@routes.get("/nudges/")
async def rules_page(request: web.Request) -> web.Response:
    """规则: the rules with their status and figures; enable, pause, approve, edit, delete, export, import."""
    return await _nudges_page(request, "nudges_rules.html", "rules", "触达规则")


@routes.get("/nudges/rules/new")
async def new_rule_page(request: web.Request) -> web.Response:
    """规则编辑 for a new rule (?from=<id> starts from a copy of that rule)."""
    source = request.query.get("from", "")
    return await _nudges_page(request, "nudges_editor.html", "editor", "新建规则", rule_id=None,
                              copy_from=int(source) if source.isdigit() else None)


@routes.get(r"/nudges/rules/{id:\d+}")
async def edit_rule_page(request: web.Request) -> web.Response:
    """规则编辑 of one rule (the API answers 404 for a rule that does not exist)."""
    return await _nudges_page(request, "nudges_editor.html", "editor", "编辑规则",
                              rule_id=int(request.match_info["id"]), copy_from=None)


@routes.get("/nudges/report")
async def report_page(request: web.Request) -> web.Response:
    """效果: per rule, sent / control / suppressed / exited, replies, conversions and the uplift."""
    days = request.query.get("days", "30")
    return await _nudges_page(request, "nudges_report.html", "report", "触达效果",
                              days=int(days) if days in ("30", "90") else 30)


@routes.get("/nudges/customers")
async def customers_page(request: web.Request) -> web.Response:
    """客户触达记录 (?customer=C10002): consent, segment and health, and the customer's nudge log."""
    return await _nudges_page(request, "nudges_customers.html", "customers", "客户触达记录", roles=LOG_ROLES,
                              customer=request.query.get("customer", "").strip()[:64])


@routes.get("/nudges/events")
async def events_page(request: web.Request) -> web.Response:
    """事件: the shop's latest events by status, segment counts, and the demo's day of events."""
    return await _nudges_page(request, "nudges_events.html", "events", "触达事件")
