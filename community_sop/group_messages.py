"""What the assistant does with every message members write in a customer group, before the bot
decides whether it was addressed: count the member as active, flag ads, spam and abuse for the
moderators (alerting the owner), check a member in when they write the check-in word, and answer a
configured keyword once per cooldown. Called by the WeChat gateway's pipeline; returns whether the
message is dealt with here (the bot then stays out of it).
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import List, Optional, Sequence
from zoneinfo import ZoneInfo

import sqlalchemy as sa
import yaml

from actions.repositories import customer_repository
from bot.settings import get_settings
from channels.wechat import db
from channels.wechat.conversation import identity
from channels.wechat.conversation.addressing import detect
from channels.wechat.inbound.payloads import InboundMessage
from channels.wechat.models import WeChatGroup
from channels.wechat.outbound.sender import notify_staff, send_to_group
from community_sop import keyword_replies
from community_sop.models import SopGroupActivity, SopGroupCheckin, SopKeywordReply, SopModerationHit, now_utc
from community_sop.moderation import Moderator
from community_sop.moderation_queue import alert_text

logger = logging.getLogger("community_sop.group_messages")
TEXTS = yaml.safe_load((Path(__file__).with_name("texts.yml")).read_text(encoding="utf-8"))
KEYWORDS_TTL_S = 10.0
# 1:1 identity of a group member: WeCom gives external contacts the same external_userid in groups
# and in 微信客服, so points earned in a group are the customer's points
MEMBER_CHANNEL = "wecom_kf"


class GroupMessages:
    def __init__(self, runtime, moderator: Optional[Moderator] = None) -> None:
        self.runtime = runtime
        settings = get_settings()
        self.tz = settings.shop.timezone
        self.moderator = moderator or Moderator(shop_domains=settings.shop.own_domains)
        self._replies: List[SopKeywordReply] = []
        self._replies_at = 0.0

    def _day(self, sent_at: int):
        return datetime.fromtimestamp(sent_at, timezone.utc).astimezone(ZoneInfo(self.tz)).date()

    async def observe(self, message: InboundMessage) -> bool:
        """True when the message was dealt with here (flagged, checked in, keyword answered)."""
        if message.channel != "group" or message.msg_type != "text" or not message.text:
            if message.channel == "group" and message.msg_type != "event":
                await self._count(message)
            return False
        await self._count(message)
        async with db.session() as s:
            group = await s.get(WeChatGroup, message.account)
            tags = list(group.tags or []) if group else []
            group_name = group.name if group else ""
            owner = group.owner_userid if group else None
        # the owner's own posts (and staff writing as the owner) are not moderated
        verdict = self.moderator.check(message.account, message.user_id, message.text, float(message.sent_at)) \
            if message.user_id != owner else None
        if verdict is not None and verdict.kind:
            await self._flag(message, verdict, group_name, owner)
            return True
        settings = get_settings()
        group_config = self.runtime.config.group
        addressed = detect(message.text, group_config.bot_names, group_config.prefixes, ())
        words = [w.strip() for w in settings.shop.checkin.words if w.strip()]
        said = (addressed.text if addressed.addressed else message.text).strip().strip("!！。.~～ ")
        if said in words:
            await self.check_in(message)
            return True
        reply = keyword_replies.matching(await self._keyword_replies(), message.text, tags)
        if reply is None:
            return False
        if await keyword_replies.claim(reply, message.account):
            await send_to_group(message.account, [reply.reply], mode="robot", key=f"sop-kw-{message.dedup_key}"[:60],
                                runtime=self.runtime)
            logger.info("group keyword answered", extra={"chat_id": message.account, "reply_id": reply.id})
            return True
        # cooling down: an addressed question still goes to the bot, a bare keyword is left alone
        return not addressed.addressed

    async def _keyword_replies(self) -> Sequence[SopKeywordReply]:
        if time.monotonic() - self._replies_at > KEYWORDS_TTL_S:
            async with db.session() as s:
                self._replies = list((await s.execute(sa.select(SopKeywordReply).where(
                    SopKeywordReply.active.is_(True)))).scalars())
            self._replies_at = time.monotonic()
        return self._replies

    async def _count(self, message: InboundMessage) -> None:
        day = self._day(message.sent_at)
        async with db.transaction() as s:
            await s.execute(db.insert(s, SopGroupActivity).values(
                chat_id=message.account, member=message.user_id, day=day, messages=0,
            ).on_conflict_do_nothing(index_elements=["chat_id", "member", "day"]))
            await s.execute(sa.update(SopGroupActivity).where(
                SopGroupActivity.chat_id == message.account, SopGroupActivity.member == message.user_id,
                SopGroupActivity.day == day).values(messages=SopGroupActivity.messages + 1))

    async def _flag(self, message: InboundMessage, verdict, group_name: str, owner: Optional[str]) -> None:
        name = str(message.extra.get("name") or "")[:64]
        async with db.transaction() as s:
            hit = SopModerationHit(chat_id=message.account, member=message.user_id, member_name=name,
                                   text=message.text[:2000], kind=verdict.kind, reason=verdict.reason[:256],
                                   at=datetime.utcfromtimestamp(message.sent_at), status="open")
            s.add(hit)
            await s.flush()
        logger.warning("group message flagged", extra={"chat_id": message.account, "kind": verdict.kind,
                                                       "hit_id": hit.id})
        if not owner:
            return
        result = await notify_staff([owner], alert_text(hit, group_name), key=f"sop-mod-{hit.id}",
                                    runtime=self.runtime)
        if result.accepted:
            async with db.transaction() as s:
                await s.execute(sa.update(SopModerationHit).where(SopModerationHit.id == hit.id).values(
                    owner_alerted=True))

    async def check_in(self, message: InboundMessage) -> None:
        """Points for the member once a day (their customer record's, as in 1:1), answered in the group."""
        settings = get_settings()
        rules = settings.shop.checkin
        day = self._day(message.sent_at)
        customer_id = await identity.resolve(MEMBER_CHANNEL, message.user_id)
        async with db.session() as s:
            customer = await customer_repository.get(s, customer_id)
            result = await customer_repository.check_in(s, customer, day, rules.points_per_day,
                                                        rules.streak_bonus_days, rules.streak_bonus_points)
        async with db.transaction() as s:
            await s.execute(db.insert(s, SopGroupCheckin).values(
                chat_id=message.account, member=message.user_id, day=day, customer_id=customer_id, created_at=now_utc(),
            ).on_conflict_do_nothing(index_elements=["chat_id", "member", "day"]))
        text = TEXTS["checkin_already" if result.already else "checkin_done"].format(
            points=result.points, streak=result.streak, total_points=result.total_points,
            bonus_days=rules.streak_bonus_days, bonus_points=rules.streak_bonus_points)
        await send_to_group(message.account, [text], mode="robot", mention=[message.user_id],
                            key=f"sop-checkin-{message.dedup_key}"[:60], runtime=self.runtime)
