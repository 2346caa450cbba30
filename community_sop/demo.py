"""The demo shop's customer groups, keyword replies and the seed's three daily plans (10:00 早安 +
签到, 15:00 爆品预告, 20:00 秒杀; paused, so the demo stays quiet until a moderator starts them).
The WeChat sandbox creates the same groups with the same robot keys (channels/wechat/sandbox), so
posts to them arrive there."""
from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Dict, List

import sqlalchemy as sa
from sqlalchemy.orm import Session

from channels.wechat.models import WeChatGroup
from community_sop.models import SopKeywordReply, SopPlan, now_utc

DEMO_GROUPS: List[Dict] = [
    {"chat_id": "wrDemoGroup01", "name": "小满生活馆·新人福利群", "owner": "owner01", "owner_name": "运营小陈",
     "tags": ["新人群"], "members": ["wmDemoUser01", "wmDemoUser02", "wmDemoUser03"], "created_days_ago": 3},
    {"chat_id": "wrDemoGroup02", "name": "小满宝妈交流群", "owner": "owner01", "owner_name": "运营小陈",
     "tags": ["宝妈群"], "members": ["wmDemoUser02", "wmDemoUser04"], "created_days_ago": 40},
    {"chat_id": "wrDemoGroup03", "name": "小满健身打卡群", "owner": "owner02", "owner_name": "教练阿杰",
     "tags": ["健身群"], "members": ["wmDemoUser03", "wmDemoUser05"], "created_days_ago": 25},
    {"chat_id": "wrDemoGroup04", "name": "小满 VIP 会员群", "owner": "owner02", "owner_name": "教练阿杰",
     "tags": ["VIP群"], "members": ["wmDemoUser01", "wmDemoUser05"], "created_days_ago": 120},
    {"chat_id": "wrDemoGroup05", "name": "小满宝妈二群", "owner": "owner01", "owner_name": "运营小陈",
     "tags": ["宝妈群", "新人群"], "members": ["wmDemoUser04"], "created_days_ago": 1},
]

ALL_DEMO = {"chat_ids": [g["chat_id"] for g in DEMO_GROUPS]}

DEMO_PLANS: List[Dict] = [
    {"name": "10:00 早安问候 + 签到福利", "targets": ALL_DEMO, "schedule": {"kind": "daily", "time": "10:00"},
     "content": [{"type": "text", "text": "早上好，{群名}的家人们！今天是{日期}{星期}☀️\n"
                                          "在群里发“签到”即可领取今日积分，连续签到 7 天再送 20 积分～"}],
     "variants": [
         {"group_tag": "宝妈群", "content": [{"type": "text", "text": (
             "宝妈们早上好！今天是{日期}{星期}，带娃辛苦啦～\n发“签到”领今日积分，攒积分换宝宝用品！")}]},
         {"group_tag": "健身群", "content": [{"type": "text", "text": (
             "早安，{群名}的伙伴们！{日期}{星期}，今天也要动起来💪\n发“签到”打卡领积分，连续 7 天额外奖励！")}]},
     ],
     "delivery": "robot"},
    {"name": "15:00 爆品预告", "targets": ALL_DEMO, "schedule": {"kind": "daily", "time": "15:00"},
     "content": [{"type": "text", "text": "【今晚 20:00 爆品预告】{群名}专享👇"},
                 {"type": "product", "spu": "NZ1001"}],
     "variants": [], "delivery": "robot"},
    {"name": "20:00 限时秒杀", "targets": ALL_DEMO, "schedule": {"kind": "daily", "time": "20:00"},
     "content": [{"type": "text", "text": "⏰ 限时秒杀开始啦！{日期}晚 8 点，数量有限，先到先得："},
                 {"type": "product", "spu": "NZ1001"},
                 {"type": "text", "text": "有问题在群里 @ 我，或者私聊客服～"}],
     "variants": [], "delivery": "robot"},
]

DEMO_KEYWORDS = [
    {"group_tag": "", "keyword": "发货",
     "reply": "付款后 48 小时内发货（预售商品以页面时间为准），发货后可以私聊我查物流哦～", "cooldown_s": 300},
    {"group_tag": "宝妈群", "keyword": "团购",
     "reply": "宝妈群团购每周三晚 8 点开团，关注群公告就不会错过～", "cooldown_s": 600},
]


def demo_robot_key(chat_id: str) -> str:
    """The demo group's robot webhook key: the same in the product and in the sandbox."""
    return "sbxrobot" + hashlib.sha1(f"siyu-demo-robot:{chat_id}".encode()).hexdigest()[:24]


def seed_demo_groups(session: Session) -> Dict[str, int]:
    """Groups, keyword replies and the paused daily plans, each only if missing (safe to re-run)."""
    now = now_utc()
    made = {"groups": 0, "plans": 0, "keywords": 0}
    for spec in DEMO_GROUPS:
        if session.get(WeChatGroup, spec["chat_id"]) is not None:
            continue
        session.add(WeChatGroup(chat_id=spec["chat_id"], name=spec["name"], owner_userid=spec["owner"],
                                owner_name=spec["owner_name"], robot_key=demo_robot_key(spec["chat_id"]),
                                delivery_mode="robot", tags=spec["tags"], member_count=len(spec["members"]),
                                group_created_at=now - timedelta(days=spec["created_days_ago"])))
        made["groups"] += 1
    if session.execute(sa.select(sa.func.count()).select_from(SopPlan)).scalar() == 0:
        for spec in DEMO_PLANS:
            session.add(SopPlan(name=spec["name"], targets=spec["targets"], schedule=spec["schedule"],
                                content=spec["content"], variants=spec["variants"], delivery=spec["delivery"],
                                active=False, created_by="system:demo", updated_by="system:demo",
                                created_at=now, updated_at=now))
            made["plans"] += 1
    if session.execute(sa.select(sa.func.count()).select_from(SopKeywordReply)).scalar() == 0:
        for spec in DEMO_KEYWORDS:
            session.add(SopKeywordReply(created_by="system:demo", active=True, **spec))
            made["keywords"] += 1
    session.commit()
    return made
