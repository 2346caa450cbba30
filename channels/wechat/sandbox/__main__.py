"""The WeChat platform sandbox from the command line.

  python -m channels.wechat.sandbox serve [--port 5099] [--bot-url http://127.0.0.1:5006]
      run the fake platform (credentials from the SIYU_WECHAT_* variables, like the bot)
  python -m channels.wechat.sandbox say --channel kf --user wmDemoUser01 "我的订单到哪了"
      write to the shop as a WeChat user and print the bot's replies as the platform delivers them
  python -m channels.wechat.sandbox deliveries [--channel kf] [--to USER]
      everything the platform delivered so far
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any, Dict, List, Optional

import aiohttp

from bot.settings import get_settings

DEMO_GROUP = {"chat_id": "wrSandboxDemoGroup01", "name": "小满生活馆 VIP 福利群", "owner": "owner01"}


def sandbox_url(args) -> str:
    return args.sandbox or f"http://127.0.0.1:{get_settings().wechat_sandbox_port}"


def cmd_serve(args) -> int:
    from aiohttp import web

    from bot.log_format import configure
    from channels.wechat.sandbox.app import PLATFORM, create_app
    from channels.wechat.sandbox.config import SandboxConfig

    settings = get_settings()
    configure(settings.log_level, settings.log_format, process_name="wechat-sandbox")
    overrides: Dict[str, Any] = {"bot_url": args.bot_url, "token_ttl_s": args.token_ttl,
                                 "callback_timeout_s": args.callback_timeout,
                                 "api_limit_per_minute": args.api_limit}
    config = SandboxConfig.from_settings(settings, **overrides)
    app = create_app(config)
    group = app[PLATFORM].add_group(DEMO_GROUP["chat_id"], DEMO_GROUP["name"], DEMO_GROUP["owner"],
                                    members=["wmDemoUser01", "wmDemoUser02"])
    # the demo shop's customer groups (community_sop/demo.py), with the robot keys the product knows
    from community_sop.demo import DEMO_GROUPS, demo_robot_key

    for spec in DEMO_GROUPS:
        app[PLATFORM].add_group(spec["chat_id"], spec["name"], spec["owner"], members=spec["members"],
                                robot_key=demo_robot_key(spec["chat_id"]))
    print(f"[sandbox] WeChat platform sandbox on http://{args.host}:{args.port} -> callbacks to "
          f"{config.bot_url or '(no bot url)'}; demo group {group.chat_id} (robot @{config.robot_name})", flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


async def _post(url: str, payload: Dict[str, Any]) -> Dict[str, Any]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        async with session.post(url, json=payload) as resp:
            return await resp.json()


async def _deliveries(base: str, **query: str) -> List[Dict[str, Any]]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(base + "/sandbox/deliveries", params={k: v for k, v in query.items() if v}) as resp:
            return (await resp.json())["deliveries"]


def _show(delivery: Dict[str, Any]) -> str:
    content = delivery.get("content") or {}
    if isinstance(content, dict) and "head_content" in content:
        # a menu message: its text, then the items a tap answers with
        items = [i.get("click", {}).get("content", "") for i in content.get("list") or [] if isinstance(i, dict)]
        return content["head_content"] + "".join(f"\n  [{item}]" for item in items)
    text = content.get("content") if isinstance(content, dict) else None
    return text if text is not None else json.dumps(content, ensure_ascii=False)


async def _say(args) -> int:
    base = sandbox_url(args)
    channel = args.channel
    target = (args.chat_id or DEMO_GROUP["chat_id"]) if channel == "group" else args.user
    text = " ".join(args.text)
    if channel == "group" and "@" not in text:
        text = f"@{get_settings().shop.bot_name}\u2005{text}"
    before = {d["id"] for d in await _deliveries(base, channel=channel, to=target)}
    payload = {"channel": channel, "user": args.user, "text": text, "wait": True}
    if channel == "group":
        payload["chat_id"] = target
    result = await _post(base + "/sandbox/say", payload)
    if "error" in result:
        print(f"sandbox: {result['error']}", file=sys.stderr)
        return 2
    callback = result.get("callback")
    if callback and not callback.get("delivered"):
        print(f"the bot did not acknowledge the callback: {callback.get('attempts')}", file=sys.stderr)
        return 1
    print(f"{args.user} -> {channel}: {text}")
    deadline, seen, quiet_since = time.monotonic() + args.wait, set(before), None
    while time.monotonic() < deadline:
        fresh = [d for d in await _deliveries(base, channel=channel, to=target) if d["id"] not in seen]
        for delivery in fresh:
            seen.add(delivery["id"])
            print(f"{get_settings().shop.bot_name}: {_show(delivery)}")
        if fresh:
            quiet_since = time.monotonic()
        elif quiet_since and time.monotonic() - quiet_since > 1.5:
            return 0
        await asyncio.sleep(0.2)
    if quiet_since is None:
        print(f"(no reply within {args.wait:.0f} s)", file=sys.stderr)
        return 1
    return 0


def cmd_say(args) -> int:
    return asyncio.run(_say(args))


def cmd_deliveries(args) -> int:
    for delivery in asyncio.run(_deliveries(sandbox_url(args), channel=args.channel, to=args.to)):
        print(json.dumps(delivery, ensure_ascii=False))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m channels.wechat.sandbox", description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the sandbox platform")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=get_settings().wechat_sandbox_port)
    serve.add_argument("--bot-url", default=None, help="where the WeChat gateway listens (callbacks go there)")
    serve.add_argument("--token-ttl", type=int, default=7200, help="access_token lifetime in seconds")
    serve.add_argument("--callback-timeout", type=float, default=5.0,
                       help="seconds the platform waits for the bot's answer before retrying")
    serve.add_argument("--api-limit", type=int, default=0,
                       help="calls per API per minute before errcode 45009 (0: unlimited)")
    serve.set_defaults(func=cmd_serve)
    say = sub.add_parser("say", help="send a message as a WeChat user and print the replies")
    say.add_argument("--sandbox", default=None, help="sandbox URL (default: local port)")
    say.add_argument("--channel", choices=["kf", "mp", "mini", "group"], default="kf")
    say.add_argument("--user", default="wmDemoUser01", help="external_userid / openid / group member id")
    say.add_argument("--chat-id", default=None, help="group chat id (group channel)")
    say.add_argument("--wait", type=float, default=15.0, help="seconds to wait for replies")
    say.add_argument("text", nargs="+")
    say.set_defaults(func=cmd_say)
    deliveries = sub.add_parser("deliveries", help="what the platform delivered")
    deliveries.add_argument("--sandbox", default=None)
    deliveries.add_argument("--channel", default=None)
    deliveries.add_argument("--to", default=None)
    deliveries.set_defaults(func=cmd_deliveries)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
