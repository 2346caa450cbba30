"""Questions whose answer lives in the database, never in the knowledge base.

Price, stock and the state of an order change every day; an FAQ that mentions a price is stale the
day after a promotion. For such questions the knowledge base declines (reason "database_fact") and
the catalog or order actions answer from the database.
"""
from __future__ import annotations

import re
from typing import Optional

from .identifiers import order_or_tracking_numbers
from .text import normalize

PRICE = "price"
STOCK = "stock"
ORDER = "order"

_PRICE = re.compile(r"多少钱|多钱|什么价|啥价|价格|价钱|价位|售价|原价|现价|标价|到手价|卖多少|卖几|几块|几元|"
                    # "这个怎么卖的" asks a price, "你们怎么卖过期的东西" complains
                    r"(怎么|咋)卖(的)?(?=$|[吗呢啊呀？?，,。！!\s])|打完折多少|优惠完多少|贵不贵|"
                    r"多少一(件|个|条|双|瓶|盒|斤|套)")
# fees and rules the shop publishes as policy (shop.yml), not catalog prices
_POLICY_FEE = re.compile(r"运费|邮费|包邮|免邮|价格单|价签|险|赔|退款|退多少|抵|快递费|顺丰|运费险|手续费|"
                         r"包装费|差价|价格保护|价保|补多少|补几|会员费|开票|发票|积分")
_STOCK = re.compile(r"有货|没货|有没有货|现货|库存|缺货|断货|补货|卖完|卖光|售罄|还剩|还有(吗|么|没|没有)|"
                    r"(还)?有没有[0-9a-z]{1,4}码|[0-9a-z]{1,4}码(还)?有(吗|么|没)")
_ORDER = re.compile(r"(到哪了|到哪里了|到哪儿了|走到哪|发货了吗|发货了没|发货没|发出了吗|"
                    # "发了吗" is about shipping, "漏发了吗" / "发错了吗" about a wrong parcel (after-sales)
                    r"(?<![漏错少多])发了(吗|没)|"
                    r"什么时候到(啊|呀)?$|怎么还没(到|发)|订单状态|订单(呢|到哪)|查(一下|下)?(我的)?(订单|物流|快递|单号)|"
                    # "我的快递呢" asks where it is; "我的快递好像丢了" is a lost parcel (after-sales policy)
                    r"我的(订单|快递|包裹)(呢|在哪|到哪|怎么样了|什么时候|还没|状态|发了|到了没|$)|"
                    r"物流(信息)?(呢|到哪)|签收了吗)")


# "…什么时候到" about money (a refund, an insurance payout) is after-sales policy, not a parcel
_MONEY = re.compile(r"钱|款|理赔|赔付|积分|发票")


def asks_database_fact(text: str) -> Optional[str]:
    """"price", "stock" or "order" when the message asks for that database fact, else None."""
    norm = normalize(text)
    if order_or_tracking_numbers(norm):
        return ORDER
    if _ORDER.search(norm) and not _MONEY.search(norm):
        return ORDER
    if _STOCK.search(norm):
        return STOCK
    for match in _PRICE.finditer(norm):
        window = norm[max(0, match.start() - 8):match.end() + 4]
        if not _POLICY_FEE.search(window):
            return PRICE
    return None


# a concrete price stated in an answer ("日常价 89 元", "售价￥129"): stale as soon as the catalog changes
_PRICE_STATED = re.compile(
    r"(日常价|售价|原价|现价|到手价|活动价|特价|价格|零售价)\s*(是|为|:|：)?\s*[¥￥]?\s*\d+(\.\d+)?\s*(元|块)?"
)


def mentions_price(answer: str) -> bool:
    """True when a stored answer states a product price. The action should not show that number (the
    catalog has the live one); the import report asks the shop to remove it from the FAQ."""
    return bool(_PRICE_STATED.search(normalize(answer)))
