"""Session start: fills the slots every response may use (shop name, persona, customer)."""
from __future__ import annotations

import asyncio
import logging
from typing import Text

from rasa_sdk.events import ActionExecuted, SessionStarted, SlotSet

from actions.action_base import ShopAction
from actions.db.engine import async_session
from actions.identity import customer_for

logger = logging.getLogger("actions.session")


class ActionSessionStart(ShopAction):
    def name(self) -> Text:
        return "action_session_start"

    async def run(self, dispatcher, tracker, domain):
        # a failing customer lookup must still start the session, silently (nothing was asked yet)
        try:
            return await asyncio.wait_for(self.act(dispatcher, tracker, domain),
                                          timeout=self.settings.action_io_timeout)
        except Exception:  # noqa: BLE001
            logger.exception("session start without customer lookup", extra={"conversation": tracker.sender_id})
            return self._fallback()

    def _fallback(self):
        shop = self.settings.shop
        return [SessionStarted(), SlotSet("persona", shop.persona), SlotSet("shop_name", shop.name),
                SlotSet("bot_name", shop.bot_name), ActionExecuted("action_listen")]

    async def act(self, dispatcher, tracker, domain):
        shop = self.settings.shop
        async with async_session() as session:
            customer = await customer_for(session, tracker.sender_id)
        return [
            SessionStarted(),
            SlotSet("persona", shop.persona),
            SlotSet("shop_name", shop.name),
            SlotSet("bot_name", shop.bot_name),
            SlotSet("customer_id", customer.id if customer else None),
            SlotSet("customer_name", customer.name if customer else None),
            ActionExecuted("action_listen"),
        ]
