"""Nudge rules as supervisors write them (JSON, the console's editor, export and import): checking
one (RuleError with the reason in Chinese), storing, approving, pausing, and the shop's shipped
rules (nudges/shipped_rules.yml).

A rule: a trigger (an event type, or a daily schedule over an audience), conditions, a delay, the
exit conditions re-checked just before sending, the message (persona-styled text with variables,
A/B variants, coupon and product blocks), its category and priority, a cooldown and daily cap,
what quiet hours do to it, its holdout share and attribution window, and whether a change waits
for a supervisor's OK.
"""
from __future__ import annotations

import functools
import logging
import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from actions.repositories import audit_repository
from nudges.models import LIVE, PAUSED, PENDING_APPROVAL, RULE_STATES, NudgeRule, iso_z, now_utc

logger = logging.getLogger("nudges.rules")
SHIPPED_FILE = Path(__file__).resolve().parent / "shipped_rules.yml"

EVENT_TYPES = ("cart_updated", "checkout_started", "order_paid", "order_shipped", "order_delivered",
               "logistics_stalled", "refund_completed", "product_viewed", "contact_added")
AUDIENCES = ("silent",)
# logistics > unpaid order / cart > lifecycle > promotion: a lower number wins when rules compete
PRIORITIES = {"logistics": 1, "order": 2, "lifecycle": 3, "promotion": 4}
CATEGORIES = ("transactional", "marketing")
EXITS = {
    "paid": "客户已付款",
    "delivered": "订单已签收",
    "repurchased": "客户已再次下单",
    "ordered": "客户已有新订单",
    "open_ticket": "订单有未结的售后或投诉",
    "contacted": "客户近期已被联系过",
}
PERSONAS = ("专业顾问", "热情闺蜜", "幽默风趣")
VARIABLES = ("称呼", "店名", "助手", "商品", "件数", "金额", "订单号", "快递", "最新物流", "退款金额", "天数", "优惠券")
MAX_TEXT = 600
KEY = re.compile(r"^[a-z][a-z0-9_]{1,63}$")


class RuleError(ValueError):
    """A rule that cannot be saved; the message says why (Chinese, shown in the console)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


Text = Union[str, Dict[str, str]]


def _check_text(value: Text) -> Text:
    texts = [value] if isinstance(value, str) else list(value.values())
    if isinstance(value, dict):
        unknown = set(value) - set(PERSONAS)
        if unknown:
            raise ValueError(f"未知的人设 {sorted(unknown)}（可选：{'、'.join(PERSONAS)}）")
        if not value:
            raise ValueError("消息文字不能为空")
    for text in texts:
        if not text.strip():
            raise ValueError("消息文字不能为空")
        if len(text) > MAX_TEXT:
            raise ValueError(f"消息文字最多 {MAX_TEXT} 个字")
        for name in re.findall(r"\{([^{}]*)\}", text):
            if name not in VARIABLES:
                raise ValueError(f"未知的变量 {{{name}}}（可用：{'、'.join('{' + v + '}' for v in VARIABLES)}）")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Trigger(Strict):
    # an event type, or a daily schedule at HH:MM over an audience
    event: Optional[Literal[EVENT_TYPES]] = None  # type: ignore[valid-type]
    daily_at: Optional[str] = Field(None, pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    audience: Optional[Literal[AUDIENCES]] = None  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _one_kind(self) -> "Trigger":
        if bool(self.event) == bool(self.daily_at):
            raise ValueError("触发方式：填事件（event）或每日定时（daily_at + audience），二选一")
        if self.daily_at and not self.audience:
            raise ValueError("每日定时的规则需要人群（audience）")
        return self


class Range(Strict):
    min: Optional[float] = Field(None, ge=0)
    max: Optional[float] = Field(None, ge=0)


class Conditions(Strict):
    levels: List[str] = Field(default_factory=list)
    segments: List[str] = Field(default_factory=list)
    tags: List[str] = Field(default_factory=list)
    # the cart's / order's value in yuan
    value_yuan: Optional[Range] = None
    days_since_last_order: Optional[Range] = None
    # the trigger is at most this old when it is acted on (a late event is not a reason to write)
    max_age_minutes: Optional[int] = Field(None, ge=1)
    # only the customer's first paid order
    first_order: bool = False


class Delay(Strict):
    minutes: float = Field(0, ge=0, le=60 * 24 * 90)
    # replenishment: the product's use cycle (days) minus this many days, instead of `minutes`
    use_cycle_days_before: Optional[int] = Field(None, ge=0, le=60)


class Variant(Strict):
    name: str = Field(min_length=1, max_length=16)
    text: Text

    _text = field_validator("text")(_check_text)


class Template(Strict):
    """An Official Account template message for when no reply window is open (service notices only:
    the platform forbids marketing in them). `fields` are the template's keywords (first, keyword1,
    remark...) with the same variables as the text."""
    template_id: str = Field(min_length=1, max_length=64)
    fields: Dict[str, str] = Field(min_length=1, max_length=10)
    url: Optional[str] = Field(None, max_length=500, pattern=r"^https?://")

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: Dict[str, str]) -> Dict[str, str]:
        for text in value.values():
            _check_text(text)
        return value


class Message(Strict):
    text: Text
    # A/B test: a second (or more) text; customers are split by a hash, stable per rule
    variants: List[Variant] = Field(default_factory=list, max_length=3)
    coupon: Optional[str] = Field(None, max_length=32)
    # products with their live price: the cart's / order's items, or these SPUs
    products: Optional[Union[Literal["items"], List[str]]] = None
    # marketing messages end with how to refuse them (PIPL art. 24)
    unsubscribe_hint: bool = True
    template: Optional[Template] = None

    _text = field_validator("text")(_check_text)


class Cap(Strict):
    # the rule sends to one customer at most once within this many days
    cooldown_days: float = Field(0, ge=0, le=365)
    # the rule sends at most this many a day over all customers (None: no limit)
    per_day: Optional[int] = Field(None, ge=1)


class RuleDef(Strict):
    key: str
    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=500)
    trigger: Trigger
    conditions: Conditions = Field(default_factory=Conditions)
    delay: Delay = Field(default_factory=Delay)
    # sent at most this long after it is due, else exited as too late (None: no limit)
    send_within_minutes: Optional[int] = Field(None, ge=1)
    exits: List[str] = Field(default_factory=list)
    message: Message
    category: Literal[CATEGORIES] = "marketing"  # type: ignore[valid-type]
    priority: Literal[tuple(PRIORITIES)] = "lifecycle"  # type: ignore[valid-type]
    cap: Cap = Field(default_factory=Cap)
    # quiet hours: hold until they end, or drop
    quiet_hours: Literal["hold", "drop"] = "hold"
    # the control group's share (None: the shop's default)
    holdout: Optional[float] = Field(None, ge=0, le=0.5)
    attribution_days: Optional[int] = Field(None, ge=1, le=90)
    requires_approval: bool = False

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        if not KEY.match(value):
            raise ValueError("规则编号只能用小写字母、数字和下划线，字母开头，2-64 位")
        return value

    @model_validator(mode="after")
    def _template_for_service(self) -> "RuleDef":
        if self.message.template is not None and self.category != "transactional":
            raise ValueError("模板消息只能用于服务通知（transactional）规则")
        return self

    @field_validator("exits")
    @classmethod
    def _exits(cls, value: List[str]) -> List[str]:
        unknown = [e for e in value if e not in EXITS]
        if unknown:
            raise ValueError(f"未知的退出条件 {unknown}（可选：{', '.join(EXITS)}）")
        return value

    @property
    def priority_rank(self) -> int:
        return PRIORITIES[self.priority]

    def variant_texts(self) -> List[tuple]:
        """[(variant name, text)]: "A" is the message's own text."""
        return [("A", self.message.text)] + [(v.name, v.text) for v in self.message.variants]


FIELD_NAMES = {"trigger": "触发", "conditions": "条件", "delay": "延迟", "message": "消息", "cap": "频次",
               "exits": "退出条件", "key": "规则编号", "name": "名称", "category": "类别", "priority": "优先级",
               "quiet_hours": "免打扰", "holdout": "对照组比例", "text": "文字", "variants": "A/B 文案",
               "cooldown_days": "冷却天数", "per_day": "每日上限", "minutes": "分钟", "min": "最小值", "max": "最大值",
               "event": "事件", "daily_at": "每日时间", "audience": "人群", "levels": "会员等级",
               "segments": "客户分层", "tags": "标签", "value_yuan": "金额区间",
               "days_since_last_order": "距上次下单天数",
               "max_age_minutes": "触发后有效分钟", "first_order": "仅首单",
               "use_cycle_days_before": "提前天数",
               "send_within_minutes": "发送时限", "coupon": "优惠券", "products": "商品", "description": "说明",
               "attribution_days": "归因天数", "requires_approval": "需要审批", "unsubscribe_hint": "退订提示"}
# pydantic's error types in the console's words
ERROR_TEXT = {
    "greater_than_equal": "不能小于 {ge}", "greater_than": "需要大于 {gt}", "less_than_equal": "不能大于 {le}",
    "less_than": "需要小于 {lt}", "int_parsing": "需要是整数", "int_from_float": "需要是整数",
    "float_parsing": "需要是数字", "bool_parsing": "需要是 true 或 false", "string_type": "需要是文字",
    "string_too_short": "不能为空", "string_too_long": "最多 {max_length} 个字", "too_long": "最多 {max_length} 项",
    "literal_error": "只能是 {expected}", "list_type": "需要是列表", "dict_type": "需要是对象",
    "model_type": "需要是对象", "string_pattern_mismatch": "格式不对", "union_tag_invalid": "格式不对",
}


def check(data: Any) -> RuleDef:
    """The rule, or RuleError naming the first problem."""
    if not isinstance(data, dict):
        raise RuleError("规则需要是一个 JSON 对象")
    try:
        return RuleDef.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = " → ".join(FIELD_NAMES.get(str(p), str(p)) for p in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "不认识的字段"
        elif first["type"] == "missing":
            message = "必填"
        elif first["type"] in ERROR_TEXT:
            ctx = {k: (int(v) if isinstance(v, float) and v.is_integer() else v)
                   for k, v in (first.get("ctx") or {}).items()}
            if isinstance(ctx.get("expected"), str):
                ctx["expected"] = ctx["expected"].replace("'", "").replace(" or ", "、").replace(", ", "、")
            try:
                message = ERROR_TEXT[first["type"]].format(**ctx)
            except (KeyError, IndexError):
                message = ERROR_TEXT[first["type"]].split(" {")[0]
        raise RuleError(f"{where}：{message}" if where else message) from None


def definition(rule: NudgeRule) -> RuleDef:
    return RuleDef.model_validate(rule.definition)


def to_json(rule: NudgeRule) -> Dict[str, Any]:
    return {"id": rule.id, "key": rule.key, "name": rule.name, "status": rule.status,
            "requires_approval": rule.requires_approval, "definition": rule.definition,
            "created_by": rule.created_by, "updated_by": rule.updated_by, "approved_by": rule.approved_by,
            "approved_at": iso_z(rule.approved_at), "updated_at": iso_z(rule.updated_at)}


# --- storing --------------------------------------------------------------------------------------------
def _audit(s: AsyncSession, by: str, action: str, key: str, detail: Dict[str, Any]) -> None:
    """Who changed which rule, in the audit log (a routine staff step: logged at INFO)."""
    actor = by if ":" in by else f"staff:{by}"
    audit_repository.record(s, actor, action, f"nudge_rule:{key}", detail, level=logging.INFO)


async def create(s: AsyncSession, data: Any, by: str, status: str = PAUSED) -> NudgeRule:
    rule = check(data)
    if (await s.execute(sa.select(NudgeRule.id).where(NudgeRule.key == rule.key))).first():
        raise RuleError(f"规则编号 {rule.key} 已存在", 409)
    row = NudgeRule(key=rule.key, name=rule.name, definition=rule.model_dump(mode="json", exclude_none=True),
                    requires_approval=rule.requires_approval, created_by=by, updated_by=by,
                    status=PENDING_APPROVAL if rule.requires_approval and status == LIVE else status)
    s.add(row)
    await s.flush()
    _audit(s, by, "nudge_rule_created", rule.key, {"status": row.status})
    return row


async def update(s: AsyncSession, row: NudgeRule, data: Any, by: str) -> NudgeRule:
    rule = check(data)
    if rule.key != row.key:
        raise RuleError("规则编号不能修改")
    row.name, row.definition = rule.name, rule.model_dump(mode="json", exclude_none=True)
    row.requires_approval, row.updated_by, row.updated_at = rule.requires_approval, by, now_utc()
    if rule.requires_approval:
        # every change of a rule under approval needs a new OK; a live one stops until it has it
        row.approved_by, row.approved_at = None, None
        if row.status == LIVE:
            row.status = PENDING_APPROVAL
    _audit(s, by, "nudge_rule_changed", row.key, {"status": row.status})
    return row


async def set_status(s: AsyncSession, row: NudgeRule, wanted: str, by: str) -> NudgeRule:
    """live / paused; a rule under approval asked to go live waits for approve()."""
    if wanted not in (LIVE, PAUSED):
        raise RuleError("状态只能是 live 或 paused")
    if wanted == LIVE and row.requires_approval and row.approved_at is None:
        wanted = PENDING_APPROVAL
    row.status, row.updated_by, row.updated_at = wanted, by, now_utc()
    _audit(s, by, "nudge_rule_status", row.key, {"status": wanted})
    return row


async def approve(s: AsyncSession, row: NudgeRule, by: str) -> NudgeRule:
    if row.status != PENDING_APPROVAL:
        raise RuleError("这条规则没有在等待审批", 409)
    row.status, row.approved_by, row.approved_at, row.updated_at = LIVE, by, now_utc(), now_utc()
    _audit(s, by, "nudge_rule_approved", row.key, {})
    return row


async def delete(s: AsyncSession, row: NudgeRule, by: str) -> None:
    """Keeps the row (the log and the report still name it) and stops it."""
    row.deleted_at, row.status, row.updated_by, row.updated_at = now_utc(), PAUSED, by, now_utc()
    _audit(s, by, "nudge_rule_deleted", row.key, {})


async def listing(s: AsyncSession) -> List[NudgeRule]:
    return list((await s.execute(sa.select(NudgeRule).where(NudgeRule.deleted_at.is_(None))
                                 .order_by(NudgeRule.id))).scalars())


async def import_rules(s: AsyncSession, items: Any, by: str) -> Dict[str, int]:
    """Rules exported from a console (a list of definitions): new keys are created paused, known keys
    updated; every rule is checked before any is written."""
    if isinstance(items, dict):
        items = items.get("rules")
    if not isinstance(items, list) or not items:
        raise RuleError("导入需要 {\"rules\": [...]}，至少一条规则")
    checked = []
    for n, item in enumerate(items, 1):
        try:
            checked.append(check(item))
        except RuleError as exc:
            raise RuleError(f"第 {n} 条规则：{exc}") from None
    created = updated = 0
    for rule in checked:
        row = (await s.execute(sa.select(NudgeRule).where(NudgeRule.key == rule.key))).scalars().first()
        data = rule.model_dump(mode="json", exclude_none=True)
        if row is None:
            await create(s, data, by)
            created += 1
        else:
            row.deleted_at = None
            await update(s, row, data, by)
            updated += 1
    return {"created": created, "updated": updated}


# --- the shop's shipped rules -------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _shipped_file() -> List[Dict[str, Any]]:
    with open(SHIPPED_FILE, encoding="utf-8") as fh:
        return yaml.safe_load(fh)["rules"]


def shipped(cart_delay_s: Optional[int] = None) -> List[Dict[str, Any]]:
    """The shipped rules' definitions; the demo sets the cart reminder's delay in seconds."""
    out = []
    for item in _shipped_file():
        item = {**item}
        if item["key"] == "cart_abandonment" and cart_delay_s is not None:
            item["delay"] = {"minutes": round(cart_delay_s / 60, 4)}
            item["send_within_minutes"] = max(30, item.get("send_within_minutes") or 30)
            item["conditions"] = {**item.get("conditions", {}), "max_age_minutes": 24 * 60}
        out.append(check(item).model_dump(mode="json", exclude_none=True))
    return out


async def install_shipped(s: AsyncSession, status: str = LIVE, cart_delay_s: Optional[int] = None) -> int:
    """Add the shipped rules the shop does not have yet (by key); how many were added."""
    known = set((await s.execute(sa.select(NudgeRule.key))).scalars())
    added = 0
    for data in shipped(cart_delay_s):
        if data["key"] not in known:
            await create(s, data, "system", status=status)
            added += 1
    return added


__all__ = ["RULE_STATES", "RuleDef", "RuleError", "check", "shipped", "install_shipped"]
