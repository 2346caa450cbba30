"""Promotions and coupons valid right now, whether one applies to a product, and price protection."""
from __future__ import annotations

from typing import List, Optional, Text

from rasa_sdk.events import SlotSet

from actions.action_base import ShopAction
from actions.db.engine import async_session
from actions.db.models import Coupon, Product, utcnow
from actions.identity import customer_for
from actions.repositories import product_repository, promotion_repository
from actions.templates import date_text, fmt, vocabulary, yuan

PRICE_PROTECTION_WORDS = ("价保", "保价", "降价", "退差价", "差价")


def coupon_line(coupon: Coupon, tz: str) -> str:
    if coupon.kind == "threshold":
        rule = fmt("coupon_rule_threshold", threshold=yuan(coupon.threshold_fen), amount=yuan(coupon.amount_fen))
    elif coupon.kind == "discount":
        rate = (100 - coupon.percent_off) / 10
        rule = fmt("coupon_rule_discount", rate=f"{rate:g}")
    else:
        rule = fmt("coupon_rule_no_threshold", amount=yuan(coupon.amount_fen))
    note = ""
    if coupon.scope in ("category", "product"):
        note += fmt(f"coupon_scope_{coupon.scope}", scope=coupon.scope_value)
    if coupon.member_only and coupon.description:
        note += fmt("coupon_member_only", description=coupon.description)
    return fmt("coupon_line", name=coupon.name, rule=rule, valid_to=date_text(coupon.valid_to, tz), note=note)


class ActionPromotion(ShopAction):
    def name(self) -> Text:
        return "action_promotion"

    async def act(self, dispatcher, tracker, domain):
        text = tracker.latest_message.get("text") or ""
        shop = self.settings.shop
        if any(w in text for w in PRICE_PROTECTION_WORDS):
            answer = shop.policies.get("price_protection")
            if answer is not None:
                dispatcher.utter_message(response="utter_policy_answer", answer=answer.answer_for(text))
                return []
        tz = shop.timezone
        async with async_session() as session:
            coupons = await promotion_repository.valid_now(session, utcnow())
            customer = await customer_for(session, tracker.sender_id)
            product = await self._product(session, text, tracker.get_slot("product"))
        level = customer.level if customer else None
        if product is None and any(w in text for w in vocabulary("promotion_rule_words")):
            # how points, stacking or member benefits work is the shop's FAQ, not today's coupon list
            from actions.knowledge_answers import answer_from_knowledge, knowledge_base

            decision = await knowledge_base().adecide(text)
            if decision.action in ("answer", "clarify"):
                return await answer_from_knowledge(dispatcher, tracker, decision, on_nothing="utter_no_promotions",
                                                   escalate_when_unsure=False)
        if product is None:
            if not coupons:
                dispatcher.utter_message(response="utter_no_promotions")
            else:
                dispatcher.utter_message(response="utter_promotions_list",
                                         coupon_list="\n".join(coupon_line(c, tz) for c in coupons))
            return []
        usable = [c for c in coupons if promotion_repository.applies_to(c, product)
                  and promotion_repository.usable_by(c, level)]
        price = min((v.price_fen for v in product.variants), default=0)
        if not usable:
            dispatcher.utter_message(response="utter_no_promotion_for_product", product_name=product.name,
                                     price=yuan(price))
            return [SlotSet("product", product.spu)]
        best = self._best(usable, price)
        variables = dict(product_name=product.name, price=yuan(price),
                         coupon_list="\n".join(coupon_line(c, tz) for c in usable))
        if best is not None:
            coupon, after = best
            dispatcher.utter_message(response="utter_promotion_for_product", best_coupon=coupon.name,
                                     best_price=yuan(after), **variables)
        else:
            dispatcher.utter_message(response="utter_promotion_for_product_threshold", **variables)
        return [SlotSet("product", product.spu)]

    @staticmethod
    async def _product(session, text: str, last_spu: Optional[str]) -> Optional[Product]:
        matches = await product_repository.find(session, text)
        if matches:
            ids = [m.entry.id for m in matches]
            products = await product_repository.by_ids(session, ids)
            for p in products:  # "那条裙子": the one we just talked about, if it is among them
                if p.spu == last_spu:
                    return p
            return products[0] if len(products) == 1 else None
        if last_spu and any(w in text for w in ("这个", "这款", "那个", "那款", "它", "这件", "那件", "这条", "那条")):
            return await product_repository.get_by_spu(session, last_spu)
        return None

    @staticmethod
    def _best(coupons: List[Coupon], price_fen: int):
        options = [(c, promotion_repository.price_after(c, price_fen)) for c in coupons]
        options = [(c, p) for c, p in options if p is not None]
        return min(options, key=lambda x: x[1]) if options else None
