"""Invoice, payment and shipping-policy questions answered with the shop's configured text."""
from __future__ import annotations

from typing import Text

from actions.action_base import ShopAction

INTENT_POLICY = {"invoice": "invoice", "payment": "payment", "shipping_policy": "shipping"}


class ActionShopPolicy(ShopAction):
    def name(self) -> Text:
        return "action_shop_policy"

    async def act(self, dispatcher, tracker, domain):
        intent = (tracker.latest_message.get("intent") or {}).get("name")
        text = tracker.latest_message.get("text") or ""
        policy = self.settings.shop.policies.get(INTENT_POLICY.get(intent, ""))
        if policy is None:
            dispatcher.utter_message(response="utter_default")
            return []
        dispatcher.utter_message(response="utter_policy_answer", answer=policy.answer_for(text))
        return []
