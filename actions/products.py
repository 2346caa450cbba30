"""Product questions answered from the live catalog: price, stock, colours/sizes, specs, recommendations."""
from __future__ import annotations

import logging
import re
from typing import Dict, List, Text

from rasa_sdk.events import SlotSet

from actions.action_base import ShopAction
from actions.db.engine import async_session
from actions.db.models import Product
from actions.repositories import product_repository
from actions.templates import fmt, join, vocabulary, yuan
from bot.nlu.patterns import LINK

logger = logging.getLogger("actions.products")
LOW_STOCK = 5


def price_text(product: Product) -> str:
    prices = sorted({v.price_fen for v in product.variants})
    if not prices:
        return ""
    if len(prices) == 1:
        return fmt("price_single", price=yuan(prices[0]))
    return fmt("price_range", low=yuan(prices[0]), high=yuan(prices[-1]))


def variant_spec(v) -> str:
    return "/".join(x for x in (v.color, v.size) if x)


def stock_summary(product: Product, text: str) -> Dict[str, str]:
    """Stock of the variants the customer mentions (a colour or size in the message), else of all."""
    variants = product.variants
    colors = [v for v in variants if v.color and v.color in text]
    if colors:
        variants = colors
    sizes = [v for v in variants if v.size and _size_in(v.size, text)]
    if sizes:
        variants = sizes
    asked_specific = bool(colors or sizes)
    available = [v for v in variants if v.stock > 0]
    sold_out = [v for v in variants if v.stock <= 0]
    low = [v for v in available if v.stock <= LOW_STOCK]
    return {
        "in_stock": join([variant_spec(v) for v in available]) if available else "",
        "out_of_stock": join([variant_spec(v) for v in sold_out]) if sold_out else "",
        "low_stock": join([f"{variant_spec(v)}（{fmt('stock_low', stock=v.stock)}）" for v in low]) if low else "",
        "asked": join([variant_spec(v) for v in variants]) if asked_specific else "",
        "all_sold_out": "yes" if not available else "",
    }


def _size_in(size: str, text: str) -> bool:
    # "L" must not match inside "XL" or a word
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(size)}(?![A-Za-z0-9])", text, re.I) is not None


def aspects(text: str) -> List[str]:
    found = [name for name, words in vocabulary("product_aspects").items() if any(w in text for w in words)]
    return found


def specs_text(product: Product) -> str:
    lines = [fmt("spec_line", key=k, value=v) for k, v in (product.specs or {}).items()]
    return "\n".join(lines)


def colors_sizes(product: Product) -> Dict[str, str]:
    colors = [c for c in dict.fromkeys(v.color for v in product.variants) if c]
    sizes = [s for s in dict.fromkeys(v.size for v in product.variants) if s]
    return {"colors": join(colors) if colors else "", "sizes": join(sizes) if sizes else ""}


class ActionProductInquiry(ShopAction):
    def name(self) -> Text:
        return "action_product_inquiry"

    async def act(self, dispatcher, tracker, domain):
        text = tracker.latest_message.get("text") or ""
        asked = aspects(text)
        async with async_session() as session:
            matches = await product_repository.find(session, text)
            if not matches and tracker.get_slot("product") and (_refers_back(text) or len(text.strip()) <= 8):
                # "这个多少钱" or a short follow-up ("多少钱啊", "有白色吗") is about the last product
                product = await product_repository.get_by_spu(session, tracker.get_slot("product"))
                products = [product] if product else []
            else:
                products = await product_repository.by_ids(session, [m.entry.id for m in matches])
            if not products:
                category = await product_repository.find_category(session, text)
                if category and ("recommend" in asked or not asked):
                    return await self._recommend(dispatcher, await product_repository.in_category(session, category),
                                                 category)
        if not products and LINK.search(text):
            # a pasted link we cannot open: ask for the product's name instead of guessing
            dispatcher.utter_message(response="utter_product_link")
            return []
        if not products:
            # no product named: a general question (sizing, care, usage, membership...) for the FAQ;
            # a price / stock / size question about a product we do not sell is "not found"
            about_a_product = bool({"price", "stock", "variants"} & set(asked))
            return await self._from_knowledge(dispatcher, tracker, text, about_a_product)
        if len(products) > 1:
            last = tracker.get_slot("product")
            same = [p for p in products if p.spu == last]
            if same:
                products = same
            elif "recommend" in asked or not asked:
                return await self._recommend(dispatcher, products, products[0].category)
            else:
                return self._choose(dispatcher, products)
        product = products[0]
        self._answer(dispatcher, product, text, asked)
        return [SlotSet("product", product.spu)]

    def _answer(self, dispatcher, product: Product, text: str, asked: List[str]) -> None:
        base = {"product_name": product.name, "price": price_text(product), **colors_sizes(product)}
        stock = stock_summary(product, text)
        answered = False
        if "price" in asked:
            dispatcher.utter_message(response="utter_product_price", **base)
            answered = True
        if "stock" in asked:
            if stock["all_sold_out"]:
                dispatcher.utter_message(response="utter_product_sold_out", **base, **stock)
            elif stock["asked"] and not stock["out_of_stock"]:
                dispatcher.utter_message(response="utter_product_in_stock_asked", **base, **stock)
            elif stock["out_of_stock"]:
                dispatcher.utter_message(response="utter_product_stock_partial", **base, **stock)
            else:
                dispatcher.utter_message(response="utter_product_in_stock", **base, **stock)
            answered = True
        if "variants" in asked and "stock" not in asked:
            dispatcher.utter_message(response="utter_product_variants", **base)
            tip = (product.specs or {}).get("尺码建议")
            if tip:
                dispatcher.utter_message(response="utter_product_size_tip", size_tip=tip, **base)
            answered = True
        if "specs" in asked:
            dispatcher.utter_message(response="utter_product_specs", specs=specs_text(product),
                                     description=product.description, **base)
            answered = True
        if not answered:
            dispatcher.utter_message(response="utter_product_overview", specs=specs_text(product),
                                     description=product.description, **base, **stock)

    @staticmethod
    async def _from_knowledge(dispatcher, tracker, text: str, about_a_product: bool):
        from actions.knowledge_answers import answer_from_knowledge, knowledge_base
        from knowledge.decision import DATABASE_FACT

        decision = await knowledge_base().adecide(text)
        if decision.reason == DATABASE_FACT or (decision.action == "answer" and decision.answer.mentions_price):
            # a price / stock question without a product we know: ask which product
            dispatcher.utter_message(response="utter_product_not_found")
            return []
        return await answer_from_knowledge(dispatcher, tracker, decision, on_nothing="utter_product_not_found",
                                           escalate_when_unsure=not about_a_product)

    def _choose(self, dispatcher, products: List[Product]):
        lines = "\n".join(fmt("product_line", index=i, name=p.name, price=price_text(p).lstrip("¥"))
                          for i, p in enumerate(products, 1))
        buttons = [{"title": p.name, "payload": p.name} for p in products]
        dispatcher.utter_message(response="utter_product_choose", product_list=lines, buttons=buttons)
        return []

    async def _recommend(self, dispatcher, products: List[Product], category: str):
        if not products:
            dispatcher.utter_message(response="utter_product_not_found")
            return []
        in_stock = [p for p in products if any(v.stock > 0 for v in p.variants)] or products
        lines = "\n".join(fmt("product_line", index=i, name=p.name, price=price_text(p).lstrip("¥"))
                          for i, p in enumerate(in_stock[:5], 1))
        dispatcher.utter_message(response="utter_product_recommend", category=category, product_list=lines)
        return []


def _refers_back(text: str) -> bool:
    return any(
        w in text for w in ("这个", "这款", "那个", "那款", "它", "这件", "那件", "这条", "那条", "这双", "那双")
    )
