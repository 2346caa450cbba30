"""Test data shared by the knowledge-base tests (imported by name: tests/ is not a package)."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[2]
HEADER = ["id", "question", "answer", "similar", "category", "source", "valid_from", "valid_to"]

SMALL_FAQ = [
    ["R1", "收到货后多久内可以退货？", "签收后 7 天内可以申请退货。", "签收几天内能退|退货期限是多久",
     "售后", "售后政策 第1条", "", ""],
    ["R2", "退货的运费谁承担？", "质量问题我们承担运费，无理由退货寄回运费由您承担。",
     "退货邮费谁出|寄回来的运费我出吗", "售后", "售后政策 第3条", "", ""],
    ["R3", "退款多久能到账？", "验收后 48 小时内原路退款。", "退款几天到账|钱什么时候退回来",
     "售后", "售后政策 第4条", "", ""],
    ["S1", "你们发什么快递？", "默认发中通或圆通快递。", "默认用哪家快递|发的是什么物流", "物流", "发货政策", "", ""],
    ["S2", "满多少包邮？", "全场满 99 元包邮，不满 99 元运费 8 元。", "包邮吗|运费多少", "物流", "包邮规则", "", ""],
    ["P1", "可以用花呗分期吗？", "单笔满 300 元可以使用花呗分期。", "支持分期付款吗|能分几期",
     "支付", "支付规则", "", ""],
    ["I1", "可以开发票吗？", "确认收货后在订单详情页申请开票。", "能开票吗|怎么申请发票", "发票", "发票规则", "", ""],
    ["M1", "每天签到能得多少积分？", "每天签到得 5 积分。", "签到送几分|每日签到奖励", "会员", "会员规则", "", ""],
    ["C1", "XM-CUP-350 保温杯多少钱？", "XM-CUP-350 保温杯日常价 89 元。", "保温杯价格|保温杯卖多少",
     "家居", "商品详情", "", ""],
    ["C2", "XM-CUP-350 保温杯能保温多久？", "装 95℃ 热水 6 小时后仍在 70℃ 以上。", "保温杯保温效果怎么样",
     "家居", "商品详情", "", ""],
    ["E1", "双11活动什么时候开始？", "双11活动 11 月 1 日开始。", "双十一几号开始|双11有什么活动",
     "优惠", "活动公告", "2020-10-20", "2020-11-11"],
    ["F1", "年货节有什么活动？", "年货节零食满 199 减 30。", "年货节满减|过年有优惠吗",
     "优惠", "活动公告", "2099-01-01", "2099-02-01"],
]


def write_faq(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str] = HEADER) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path
