"""Rendering a community SOP post for one customer group: the plan's content (or the variant for one
of the group's tags) with its variables filled in ({群名} {日期} {星期} {群主} {时间}, in the shop's
time zone) and its product blocks showing the catalog's LIVE name, price and stock, read at render
time so a post scheduled weeks ahead never advertises a stale price.

A `Post` is delivery-neutral (texts, cards, problems) and turns into each delivery form WeCom has
for groups: group robot webhook messages, a mass-send task (externalcontact/add_msg_template) or a
reminder the owner forwards. `problems` say why a post cannot go out as is (unknown product, too
many attachments...): a preview shows them and firing refuses such a post.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from actions.db.models import Product, ProductVariant

MODES = ("robot", "mass_send", "owner_reminder")
MASS_SEND_MAX_ATTACHMENTS = 9
MASS_SEND_TEXT_BYTES = 4000
ROBOT_NEWS_MAX_ARTICLES = 8
ROBOT_MESSAGES_PER_MINUTE = 20
LOW_STOCK = 10

WEEKDAYS = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
_VARIABLE = re.compile(r"\{([^{}]+)\}")

WARN_ROBOT_MINIPROGRAM = "群机器人不能发小程序卡片，将以文字发送"
WARN_MASS_SEND_QUOTA = "每个客户群每月最多收到与当月天数相同次数的群发（需群主在企业微信确认）"
WARN_OWNER_REMINDER = "群主会在企业微信收到提醒，需手动转发"


@dataclass(frozen=True)
class GroupInfo:
    chat_id: str
    name: str
    owner: str = ""          # owner's WeCom userid
    owner_name: str = ""     # owner's display name if known
    tags: Tuple[str, ...] = ()

    @classmethod
    def of(cls, group: Any) -> "GroupInfo":
        """From a wechat_groups row."""
        return cls(chat_id=group.chat_id, name=group.name or group.chat_id, owner=group.owner_userid or "",
                   owner_name=group.owner_name or "", tags=tuple(group.tags or ()))


@dataclass
class Post:
    texts: List[str]            # text blocks after variables, in order (product blocks become a text line too)
    cards: List[dict]           # non-text blocks in a neutral form: {"type": "image"|"link"|"miniprogram", ...}
    problems: List[str]         # Chinese reasons this post cannot be sent as is
    variant: Optional[str]      # the group_tag of the variant used, None for the default content
    # the blocks in content order: ("text", index in texts) / ("card", index in cards); empty means
    # all texts, then all cards
    sequence: List[Tuple[str, int]] = field(default_factory=list)
    # notes for the shop that do not stop the post (a product sold out...), shown with every mode's warnings
    notes: List[str] = field(default_factory=list)
    # what stops the post only as a mass send (its attachment and text limits)
    mass_send_problems: List[str] = field(default_factory=list)

    def problems_for(self, mode: str) -> List[str]:
        """Why the post cannot go out by this delivery mode (empty: it can)."""
        return list(self.problems) + (list(self.mass_send_problems) if mode == "mass_send" else [])

    def _ordered(self) -> List[Tuple[str, Any]]:
        order = self.sequence or ([("text", i) for i in range(len(self.texts))]
                                  + [("card", i) for i in range(len(self.cards))])
        return [(kind, self.texts[i] if kind == "text" else self.cards[i]) for kind, i in order]

    def for_robot(self) -> List[Union[str, dict]]:
        """Group robot webhook messages: consecutive texts (and mini-programs, which a robot can only
        send as text) in one text message; consecutive images and links in one news message."""
        messages: List[Union[str, dict]] = []
        lines: List[str] = []
        articles: List[dict] = []

        def flush_text() -> None:
            if lines:
                messages.append("\n".join(lines))
                lines.clear()

        def flush_news() -> None:
            if articles:
                messages.append({"msgtype": "news", "news": {"articles": list(articles)}})
                articles.clear()

        for kind, item in self._ordered():
            if kind == "text":
                flush_news()
                lines.append(item)
            elif item.get("type") == "miniprogram":
                flush_news()
                lines.append(f"「{item.get('title') or '小程序'}」请在微信中打开小程序查看")
            else:
                article = _robot_article(item)
                if article is None:
                    continue
                flush_text()
                if len(articles) == ROBOT_NEWS_MAX_ARTICLES:
                    flush_news()
                articles.append(article)
        flush_text()
        flush_news()
        return messages

    def for_mass_send(self) -> Tuple[str, List[dict]]:
        """(text, attachments) for externalcontact/add_msg_template."""
        attachments = [a for a in (_mass_send_attachment(card) for card in self.cards) if a is not None]
        return "\n".join(self.texts), attachments

    def for_reminder(self, group_name: str) -> str:
        """The text sent to the group owner to forward into the group: the texts, then the cards as lines."""
        lines = list(self.texts)
        for card in self.cards:
            kind = card.get("type")
            if kind == "link":
                lines.append(f"【链接】{card.get('title', '')} {card.get('url', '')}".rstrip())
            elif kind == "image":
                lines.append(f"【图片】{card.get('url', '')}")
            elif kind == "miniprogram":
                lines.append(f"【小程序】{card.get('title', '')}（{card.get('appid', '')} {card.get('page', '')}）")
        return f"请把下面的内容发到群「{group_name or '客户群'}」：\n\n" + "\n".join(lines)

    def preview(self) -> dict:
        text, attachments = self.for_mass_send()
        return {
            "variant": self.variant,
            "texts": list(self.texts),
            "cards": [dict(c) for c in self.cards],
            "problems": list(self.problems),
            "mass_send_problems": list(self.mass_send_problems),
            "robot": self.for_robot(),
            "mass_send": {"text": text, "attachments": attachments},
        }

    def warnings(self, mode: str) -> List[str]:
        """Notes for the shop about sending this post in `mode` (robot, mass_send, owner_reminder)."""
        if mode not in MODES:
            raise ValueError(f"unknown delivery mode {mode!r}, expected one of {', '.join(MODES)}")
        notes: List[str] = []
        miniprograms = [c for c in self.cards if c.get("type") == "miniprogram"]
        if mode == "robot":
            if miniprograms:
                notes.append(WARN_ROBOT_MINIPROGRAM)
            if any(c.get("type") == "image" for c in self.cards):
                notes.append("群机器人以图文卡片发送图片，群成员点开查看大图")
            count = len(self.for_robot())
            if count > ROBOT_MESSAGES_PER_MINUTE:
                notes.append(f"本帖共 {count} 条机器人消息，超过每分钟 {ROBOT_MESSAGES_PER_MINUTE} 条的部分会顺延发送")
        elif mode == "mass_send":
            notes.append(WARN_MASS_SEND_QUOTA)
            for card in miniprograms:
                if not card.get("pic_media_id"):
                    notes.append(f"小程序「{card.get('title', '')}」没有封面图（pic_media_id），"
                                 "企业微信群发需要先上传封面")
        else:
            notes.append(WARN_OWNER_REMINDER)
        return notes + list(self.notes)


def _robot_article(card: dict) -> Optional[dict]:
    url = card.get("url")
    if not url:
        return None
    if card.get("type") == "image":
        return {"title": "图片", "url": url, "picurl": url}
    article = {"title": card.get("title") or url, "url": url}
    if card.get("description"):
        article["description"] = card["description"]
    if card.get("picurl"):
        article["picurl"] = card["picurl"]
    return article


def _mass_send_attachment(card: dict) -> Optional[dict]:
    kind = card.get("type")
    if kind == "image":
        return {"msgtype": "image", "image": {"pic_url": card.get("url", "")}}
    if kind == "link":
        link = {"title": card.get("title", "")}
        if card.get("picurl"):
            link["picurl"] = card["picurl"]
        if card.get("description"):
            link["desc"] = card["description"]
        link["url"] = card.get("url", "")
        return {"msgtype": "link", "link": link}
    if kind == "miniprogram":
        mini = {"title": card.get("title", "")}
        if card.get("pic_media_id"):
            mini["pic_media_id"] = card["pic_media_id"]
        mini["appid"] = card.get("appid", "")
        mini["page"] = card.get("page", "")
        return {"msgtype": "miniprogram", "miniprogram": mini}
    return None


# --- content ---------------------------------------------------------------------------------------
def choose_content(plan: dict, tags: Sequence[str]) -> Tuple[List[dict], Optional[str]]:
    """The blocks a group with `tags` receives: the first variant (in list order) whose group_tag the
    group has, else the plan's default content. Returns (blocks, the variant's tag or None)."""
    tag_set = set(tags or ())
    for variant in plan.get("variants") or []:
        if not isinstance(variant, dict):
            continue
        tag = variant.get("group_tag")
        content = variant.get("content")
        if tag and tag in tag_set and isinstance(content, list):
            return content, tag
    content = plan.get("content")
    return (content if isinstance(content, list) else []), None


def local_time(at: datetime, tz: str) -> datetime:
    """`at` in the shop's time zone; a naive datetime is UTC (as the database stores them)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=timezone.utc)
    return at.astimezone(ZoneInfo(tz))


def fill_variables(text: str, group: GroupInfo, local: datetime) -> str:
    values = {
        "群名": group.name or "",
        "日期": f"{local.month}月{local.day}日",
        "星期": WEEKDAYS[local.weekday()],
        "群主": group.owner_name or group.owner or "群主",
        "时间": f"{local.hour:02d}:{local.minute:02d}",
    }
    return _VARIABLE.sub(lambda m: values.get(m.group(1), m.group(0)), text)


def yuan_text(fen: int) -> str:
    """23900 -> '¥239', 1250 -> '¥12.50'."""
    sign = "-" if fen < 0 else ""
    whole, cents = divmod(abs(int(fen)), 100)
    return f"¥{sign}{whole}" if cents == 0 else f"¥{sign}{whole}.{cents:02d}"


def price_text(prices: Sequence[int]) -> str:
    low, high = min(prices), max(prices)
    return yuan_text(low) if low == high else f"{yuan_text(low)}-{yuan_text(high)[1:]}"


def stock_text(stock: int) -> str:
    if stock <= 0:
        return "已售罄"
    if stock <= LOW_STOCK:
        return f"仅剩{stock}件"
    return "有货"


@dataclass
class _Live:
    name: str
    on_sale: bool
    prices: List[int] = field(default_factory=list)
    stock: int = 0


async def _live_products(session: AsyncSession, spus: Sequence[str]) -> Dict[str, _Live]:
    """Name, sale state, variant prices and total stock per SPU, read from the database now: plain
    columns, not ORM objects, so nothing cached in the session's identity map is reused."""
    if not spus:
        return {}
    stmt = (sa.select(Product.spu, Product.name, Product.on_sale, ProductVariant.price_fen, ProductVariant.stock)
            .outerjoin(ProductVariant, ProductVariant.product_id == Product.id)
            .where(Product.spu.in_(sorted(set(spus)))))
    live: Dict[str, _Live] = {}
    for spu, name, on_sale, price_fen, stock in (await session.execute(stmt)).all():
        item = live.setdefault(spu, _Live(name=name, on_sale=bool(on_sale)))
        if price_fen is not None:
            item.prices.append(int(price_fen))
            item.stock += max(int(stock or 0), 0)
    return live


def _product_line(spu: str, live: Optional[_Live], problems: List[str], notes: List[str]) -> str:
    if live is None or not live.on_sale:
        problems.append(f"商品 {spu} 不存在或已下架")
        return f"【商品 {spu} 不存在或已下架】"
    if not live.prices:
        problems.append(f"商品 {spu}（{live.name}）没有规格和价格")
        return f"【{live.name}】暂无报价"
    stock = stock_text(live.stock)
    note = f"商品「{live.name}」已售罄，帖子里会显示“已售罄”"
    if live.stock <= 0 and note not in notes:
        notes.append(note)
    return f"【{live.name}】{price_text(live.prices)}，{stock}"


def _card(block: dict, kind: str, problems: List[str]) -> Optional[dict]:
    """The neutral card of an image, link or mini-program block; None (and a problem) when a
    required field is missing."""
    if kind == "image":
        if not block.get("url"):
            problems.append("图片缺少链接（url）")
            return None
        return {"type": "image", "url": block["url"]}
    if kind == "link":
        missing = [k for k in ("title", "url") if not block.get(k)]
        if missing:
            problems.append(f"链接缺少{'、'.join(missing)}")
            return None
        card = {"type": "link", "title": block["title"], "url": block["url"]}
        for key in ("description", "picurl"):
            if block.get(key):
                card[key] = block[key]
        return card
    missing = [k for k in ("title", "appid", "page") if not block.get(k)]
    if missing:
        problems.append(f"小程序缺少{'、'.join(missing)}")
        return None
    card = {"type": "miniprogram", "title": block["title"], "appid": block["appid"], "page": block["page"]}
    if block.get("pic_media_id"):
        card["pic_media_id"] = block["pic_media_id"]
    return card


async def render(session: AsyncSession, plan: dict, group: GroupInfo, at: datetime,
                 tz: str = "Asia/Shanghai") -> Post:
    """The post `group` receives from `plan` at `at`, with live product prices and stock."""
    blocks, variant = choose_content(plan, group.tags)
    local = local_time(at, tz)
    spus = [str(b.get("spu") or "").strip() for b in blocks if isinstance(b, dict) and b.get("type") == "product"]
    live = await _live_products(session, [s for s in spus if s])

    texts: List[str] = []
    cards: List[dict] = []
    problems: List[str] = []
    notes: List[str] = []
    sequence: List[Tuple[str, int]] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            text = fill_variables(str(block.get("text") or ""), group, local)
            if text.strip():
                sequence.append(("text", len(texts)))
                texts.append(text)
        elif kind == "product":
            spu = str(block.get("spu") or "").strip()
            if not spu:
                problems.append("商品块缺少 spu")
                continue
            sequence.append(("text", len(texts)))
            texts.append(_product_line(spu, live.get(spu), problems, notes))
        elif kind in ("image", "link", "miniprogram"):
            card = _card(block, kind, problems)
            if card is not None:
                sequence.append(("card", len(cards)))
                cards.append(card)
        else:
            problems.append(f"不支持的内容类型：{kind or '（缺少 type）'}")

    if not texts and not cards and not problems:
        problems.append("内容为空")
    text_bytes = len("\n".join(texts).encode("utf-8"))
    mass_send_problems = []
    if text_bytes > MASS_SEND_TEXT_BYTES:
        mass_send_problems.append(f"群发文字最多 {MASS_SEND_TEXT_BYTES} 字节，当前 {text_bytes} 字节")
    if len(cards) > MASS_SEND_MAX_ATTACHMENTS:
        mass_send_problems.append(f"群发最多 {MASS_SEND_MAX_ATTACHMENTS} 个附件，当前 {len(cards)} 个")
    return Post(texts=texts, cards=cards, problems=problems, variant=variant, sequence=sequence, notes=notes,
                mass_send_problems=mass_send_problems)
