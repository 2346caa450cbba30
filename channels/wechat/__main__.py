"""Operating the WeChat connectors from the command line (same database as the bot):

  python -m channels.wechat check                      which connectors are configured, what is missing
  python -m channels.wechat groups list
  python -m channels.wechat groups add CHAT_ID --name 福利群 --owner USERID [--robot-key KEY] [--mode robot]
      [--tags 宝妈群,新人群] [--owner-name 运营小陈] [--members 200] [--created 2026-12-01] [--dissolved]
  python -m channels.wechat outbox                     messages that failed, were refused or are unknown
  python -m channels.wechat outbox --requeue ID        try one of them again
  python -m channels.wechat mass refresh|remind|cancel MSGID
"""
from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from typing import List, Optional

import sqlalchemy as sa

from actions.db.engine import async_session, dispose_async_engines
from channels.wechat.config import WeChatConfig
from channels.wechat.models import WeChatGroup, now_utc

MODES = ("robot", "mass_send", "owner_reminder")


async def _check(_args) -> int:
    config = WeChatConfig.from_settings()
    for name, value in (("wecom_kf (微信客服)", config.kf), ("wechat_mp (Official Account)", config.mp),
                        ("wechat_mini (mini-program)", config.mini), ("wecom_group (robot callback)",
                                                                      config.group.callback),
                        ("mass_send (客户联系)", config.contact), ("app_message (自建应用)", config.app)):
        print(f"{'on ' if value else 'off'}  {name}")
    for name, missing in config.problems.items():
        print(f"incomplete: {name} needs {', '.join(missing)}")
    print(f"APIs: {config.work_api_base} (WeCom), {config.mp_api_base} (Official Account / mini-program)")
    return 1 if config.problems else 0


async def _groups(args) -> int:
    async with async_session() as session:
        if args.action == "list":
            for group in (await session.execute(sa.select(WeChatGroup).order_by(WeChatGroup.chat_id))).scalars():
                print(f"{group.chat_id}  {group.name or '-'}  owner={group.owner_userid or '-'}  "
                      f"mode={group.delivery_mode}  robot={'yes' if group.robot_key else 'no'}  "
                      f"tags={','.join(group.tags or []) or '-'}  members={group.member_count}"
                      + ("  dissolved" if group.dissolved_at else ""))
            return 0
        if args.mode not in MODES:
            print(f"--mode must be one of {', '.join(MODES)}", file=sys.stderr)
            return 2
        group = await session.get(WeChatGroup, args.chat_id)
        if group is None:
            group = WeChatGroup(chat_id=args.chat_id)
            session.add(group)
        group.name = args.name or group.name or ""
        group.owner_userid = args.owner or group.owner_userid
        group.robot_key = args.robot_key or group.robot_key
        group.delivery_mode = args.mode
        if args.tags is not None:  # the labels SOP plans, variants and keyword replies target
            group.tags = [t.strip() for t in args.tags.replace("，", ",").split(",") if t.strip()]
        group.owner_name = args.owner_name or group.owner_name or ""
        if args.members is not None:
            group.member_count = args.members
        if args.created:
            group.group_created_at = datetime.strptime(args.created, "%Y-%m-%d")
        group.dissolved_at = now_utc() if args.dissolved else None
        group.updated_at = now_utc()
        if args.mode == "robot" and not group.robot_key:
            print("a robot group needs --robot-key (the key= part of the robot's webhook URL)", file=sys.stderr)
            return 2
        await session.commit()
        print(f"group {args.chat_id} saved (mode {args.mode})")
        return 0


async def _outbox(args) -> int:
    from channels.wechat.outbound import outbox

    if args.requeue:
        ok = await outbox.requeue(args.requeue)
        print("requeued" if ok else "no failed / refused / unknown message with that id")
        return 0 if ok else 1
    for row in await outbox.problems(args.limit):
        print(f"#{row.id} {row.created_at:%Y-%m-%d %H:%M} {row.channel} -> {row.recipient}: {row.status} "
              f"(errcode {row.last_errcode}, {row.last_error or '-'}, attempts {row.attempts})")
    return 0


async def _mass(args) -> int:
    from channels.wechat.outbound import mass_send
    from channels.wechat.runtime import WeChatRuntime

    runtime = WeChatRuntime()
    try:
        if args.action == "refresh":
            task = await mass_send.refresh(runtime.client, args.msgid)
            print(f"{task.status}: {task.results}" if task else "unknown msgid")
        elif args.action == "remind":
            print(await mass_send.remind_owner(runtime.client, args.msgid))
        else:
            print("cancelled" if await mass_send.cancel(runtime.client, args.msgid) else "unknown msgid")
    finally:
        await runtime.client.close()
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m channels.wechat", description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("check").set_defaults(func=_check)
    groups = sub.add_parser("groups")
    groups.add_argument("action", choices=["list", "add"])
    groups.add_argument("chat_id", nargs="?")
    groups.add_argument("--name")
    groups.add_argument("--owner", help="the group owner's WeCom userid")
    groups.add_argument("--robot-key", help="key= of the group robot's webhook URL")
    groups.add_argument("--mode", default="robot", help=" / ".join(MODES))
    groups.add_argument("--tags", help="comma-separated labels (宝妈群,新人群) for SOP plans and keyword replies")
    groups.add_argument("--owner-name", help="the owner's name ({群主} in posts)")
    groups.add_argument("--members", type=int, help="member count shown to moderators")
    groups.add_argument("--created", help="when the group was created (YYYY-MM-DD, for 建群第 N 天 plans)")
    groups.add_argument("--dissolved", action="store_true", help="the group was dissolved: posts are skipped")
    groups.set_defaults(func=_groups)
    box = sub.add_parser("outbox")
    box.add_argument("--requeue", type=int)
    box.add_argument("--limit", type=int, default=50)
    box.set_defaults(func=_outbox)
    mass = sub.add_parser("mass")
    mass.add_argument("action", choices=["refresh", "remind", "cancel"])
    mass.add_argument("msgid")
    mass.set_defaults(func=_mass)
    args = parser.parse_args(argv)
    if args.command == "groups" and args.action == "add" and not args.chat_id:
        parser.error("groups add needs a CHAT_ID")

    async def run() -> int:
        try:
            return await args.func(args)
        finally:
            await dispose_async_engines()

    return asyncio.run(run())


if __name__ == "__main__":
    sys.exit(main())
