"""Membership services: daily check-in (签到), refusing marketing messages (退订) and taking the
refusal back (订阅)."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Dict, List, Text
from zoneinfo import ZoneInfo

from actions.action_base import ShopAction
from actions.conversation import CONFIRM_UNSUBSCRIBE
from actions.customer_care import ask_to_confirm, sure_of
from actions.db.engine import async_session
from actions.identity import customer_for, split_sender
from actions.repositories import customer_repository

logger = logging.getLogger("actions.membership")


class ActionCheckin(ShopAction):
    def name(self) -> Text:
        return "action_checkin"

    async def act(self, dispatcher, tracker, domain):
        shop = self.settings.shop
        today = datetime.now(timezone.utc).astimezone(ZoneInfo(shop.timezone)).date()
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
            if customer is None:
                dispatcher.utter_message(response="utter_checkin_needs_member")
                return []
            rules = shop.checkin
            result = await customer_repository.check_in(session, customer, today, rules.points_per_day,
                                                        rules.streak_bonus_days, rules.streak_bonus_points)
        response = "utter_checkin_already" if result.already else "utter_checkin_done"
        dispatcher.utter_message(response=response, points=result.points, streak=result.streak,
                                 total_points=result.total_points, bonus_days=rules.streak_bonus_days,
                                 bonus_points=rules.streak_bonus_points)
        return []


async def opt_out(dispatcher, tracker) -> List[Dict[str, Any]]:
    """Records the refusal of marketing messages and confirms it to the customer."""
    channel, _ = split_sender(tracker.sender_id)
    async with async_session() as session:
        customer = await customer_for(session, tracker.sender_id)
        await customer_repository.record_marketing_opt_out(session, customer, tracker.sender_id,
                                                           source=f"conversation:{channel}")
    logger.info("marketing opt-out recorded", extra={"conversation": tracker.sender_id,
                                                    "identified": customer is not None})
    dispatcher.utter_message(response="utter_unsubscribed")
    return []


class ActionResubscribe(ShopAction):
    """订阅 / 恢复推送: marketing messages allowed again, recorded like the refusal was."""

    def name(self) -> Text:
        return "action_resubscribe"

    async def act(self, dispatcher, tracker, domain):
        channel, _ = split_sender(tracker.sender_id)
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
            if customer is None:
                dispatcher.utter_message(response="utter_resubscribe_needs_member")
                return []
            await customer_repository.record_marketing_opt_in(session, customer, tracker.sender_id,
                                                              source=f"conversation:{channel}")
        logger.info("marketing opt-in recorded", extra={"conversation": tracker.sender_id})
        dispatcher.utter_message(response="utter_resubscribed")
        return []


class ActionUnsubscribe(ShopAction):
    """Honoured at once and recorded (PIPL art. 24); service messages about orders are not affected.
    A message that does not plainly ask to stop messages ("取消会员") is asked about first."""

    def name(self) -> Text:
        return "action_unsubscribe"

    async def act(self, dispatcher, tracker, domain):
        if not sure_of(tracker, "unsubscribe_markers"):
            return ask_to_confirm(dispatcher, CONFIRM_UNSUBSCRIBE, "confirm_unsubscribe_yes")
        return await opt_out(dispatcher, tracker)
