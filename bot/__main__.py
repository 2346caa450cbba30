"""Command line of the product: `python -m bot <command>` (the `./siyu` wrapper installs first).

  run [--demo] [--sandbox]  prepare database and model, start and supervise the servers
                      (--sandbox: also a fake WeChat platform, see docs/WECHAT_SETUP.md)
  train [--force]     train the model if config, domain or data changed
  migrate             bring the database schema up to date
  seed-demo           create the demo shop if the database is empty
  import KIND FILE    import products / customers / orders from CSV or JSON
  verification locks | unlock SY…   order-verification locks in force; lift one (staff)
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import subprocess
import sys
import time

from bot.settings import REPO_ROOT, get_settings, masked_url, reset_settings_cache

logger = logging.getLogger("siyu")


def cmd_migrate(_args) -> int:
    from actions.db.migrate import upgrade

    upgrade()
    return 0


def cmd_seed_demo(_args) -> int:
    from sqlalchemy.orm import Session

    from actions.db.demo_data import is_empty, seed_demo_data
    from actions.db.engine import create_sync_engine
    from actions.db.migrate import upgrade

    upgrade()
    engine = create_sync_engine()
    with Session(engine) as session:
        if is_empty(session):
            counts = seed_demo_data(session)
            print(f"[siyu] demo shop created: {counts['products']} products, {counts['customers']} customers, "
                  f"{counts['orders']} orders")
        else:
            print("[siyu] database already has a catalog: demo data not created")
        from community_sop.demo import seed_demo_groups

        made_groups = seed_demo_groups(session)
        if made_groups["groups"]:
            print(f"[siyu] demo customer groups created: {made_groups['groups']} groups, "
                  f"{made_groups['plans']} SOP plans (paused)")
        from nudges.demo import seed as seed_nudges

        made_nudges = seed_nudges(session, get_settings().demo_nudge_delay_s)
        if made_nudges["rules"] or made_nudges["history"]:
            print(f"[siyu] demo nudges: {made_nudges['rules']} rules (live), {made_nudges['history']} past cart "
                  f"reminders as history; 微信客服 wmDemoUser01…05 are {', '.join(made_nudges['linked'])}")
    engine.dispose()
    made = asyncio.run(_demo_staff())
    if made:
        print(f"[siyu] demo staff created: {', '.join(made)}")
    return 0


async def _demo_staff():
    from actions.db.engine import dispose_async_engines, in_transaction
    from desk.canned import ensure_demo_canned
    from desk.staff import ensure_demo_staff

    try:
        password = get_settings().demo_staff_password.get_secret_value()
        await in_transaction(ensure_demo_canned)
        return await in_transaction(lambda s: ensure_demo_staff(s, password))
    finally:
        await dispose_async_engines()


def cmd_staff(args) -> int:
    """Staff accounts of the console: add (password prompted), disable / enable, list."""
    import getpass

    from actions.db.engine import dispose_async_engines, in_transaction
    from desk import staff

    async def run() -> int:
        try:
            if args.action == "list":
                async def show(s):
                    for user in await staff.listing(s):
                        state = "disabled" if user.disabled else user.presence
                        print(f"{user.username}\t{user.role}\t{user.display_name}\t{state}")
                await in_transaction(show)
                return 0
            if not args.name:
                print("a user name is needed")
                return 2
            if args.action == "add":
                password = os.environ.get("SIYU_NEW_STAFF_PASSWORD") or getpass.getpass(f"password for {args.name}: ")
                if not os.environ.get("SIYU_NEW_STAFF_PASSWORD") and getpass.getpass("again: ") != password:
                    print("the passwords differ")
                    return 2
                await in_transaction(lambda s: staff.add(s, args.name, password, args.role,
                                                         display_name=args.display_name or "",
                                                         actor=f"cli:{args.by}"))
                print(f"[siyu] staff {args.name} added ({args.role})")
            elif args.action in ("disable", "enable"):
                await in_transaction(lambda s: staff.set_disabled(s, args.name, args.action == "disable",
                                                                  f"cli:{args.by}"))
                print(f"[siyu] staff {args.name} {args.action}d")
            elif args.action == "password":
                password = (os.environ.get("SIYU_NEW_STAFF_PASSWORD")
                            or getpass.getpass(f"new password for {args.name}: "))
                await in_transaction(lambda s: staff.set_password(s, args.name, password, f"cli:{args.by}"))
                print(f"[siyu] password of {args.name} changed (their sessions ended)")
            return 0
        except staff.StaffError as exc:
            print(f"[siyu] {exc}")
            return 2
        finally:
            await dispose_async_engines()

    cmd_migrate(args)
    return asyncio.run(run())


def prepare_knowledge(demo: bool) -> None:
    """Makes sure the action server finds a published knowledge-base index: the demo shop's FAQ and
    documents in demo mode, otherwise the entries the shop imported (python -m knowledge import)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine
    from knowledge import cli as knowledge_cli
    from knowledge.models import KnowledgeEntry
    from knowledge.publish import current_version

    settings = get_settings()
    if current_version(settings.knowledge_index_dir):
        return
    engine = create_sync_engine()
    with Session(engine) as session:
        entries = session.execute(select(func.count(KnowledgeEntry.id))).scalar_one()
    engine.dispose()
    if entries:
        print("[siyu] building the knowledge-base index from the database")
        knowledge_cli.main(["build", "--from-db"])
    elif demo:
        print("[siyu] importing the demo shop's FAQ and documents into the knowledge base")
        demo_dir = REPO_ROOT / "knowledge" / "demo"
        knowledge_cli.main(["import", "--faq", str(demo_dir / "faq.csv"), "--docs", str(demo_dir / "docs"),
                            "--calibration", str(REPO_ROOT / "knowledge" / "eval" / "calibration.csv")])
    else:
        print("[siyu] no knowledge base yet (python -m knowledge import --faq FILE): FAQ questions will be "
              "answered with the small-talk reply")


def cmd_train(args) -> int:
    from bot.training import fingerprint, model_path, train_command
    from desk.corrections import export_nlu

    settings = get_settings()
    added = export_nlu(settings)
    if added:
        print(f"[siyu] {added} NLU examples from the desk's 错题本 (corrections) join the training data")
    fp = fingerprint()
    target = model_path(settings, fp)
    if target.exists() and not args.force:
        print(f"[siyu] model {target.name} is up to date")
        return 0
    print(f"[siyu] training {target.name} (config, domain or data changed; a few minutes)")
    started = time.monotonic()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    code = subprocess.call(train_command(settings, fp, sys.executable), env=env)
    if code == 0:
        print(f"[siyu] trained in {time.monotonic() - started:.0f} s")
    return code


def cmd_import(args) -> int:
    from actions.db.catalog_dictionary import CATALOG_DICT
    from actions.db.importer import run_import

    report = run_import(args.kind, args.file, dictionary=CATALOG_DICT)
    for problem in report.errors:
        print(f"[siyu] {args.file}: line {problem.line}: {problem.message}", file=sys.stderr)
    print(f"[siyu] {args.kind}: {report.created} created, {report.updated} updated, "
          f"{len(report.errors)} rows rejected")
    if report.dictionary_updated:
        print(f"[siyu] new catalog words in {CATALOG_DICT.relative_to(CATALOG_DICT.parents[2])}: the next run "
              "retrains the NLU with them; rebuild the knowledge index to use them there too")
    return 0 if report.created + report.updated > 0 or not report.errors else 1


def cmd_verification(args) -> int:
    """Staff: list the order-verification locks in force, or lift one (written to the audit log)."""
    from actions import order_verification
    from actions.db.engine import async_session, dispose_async_engines
    from actions.db.models import utcnow

    if args.action == "unlock" and not args.subject:
        print("[siyu] unlock needs an order number (SY…) or client:<address>", file=sys.stderr)
        return 2

    async def run() -> int:
        try:
            async with async_session() as session:
                if args.action == "locks":
                    locks = await order_verification.locks_in_force(session)
                    for guard in locks:
                        until = f"until {guard.locked_until:%Y-%m-%d %H:%M} UTC" if guard.locked_until else \
                            "until lifted"
                        print(f"{guard.key}\tlocked {guard.locked_at:%Y-%m-%d %H:%M} UTC, {until}, "
                              f"{guard.failures} failures")
                    print(f"[siyu] {len(locks)} verification lock(s) in force")
                    return 0
                key = args.subject if ":" in args.subject else order_verification.order_key(args.subject.upper())
                if await order_verification.lift(session, key, f"staff:{args.by}", utcnow()):
                    print(f"[siyu] {key}: lock lifted by {args.by} (recorded in the audit log)")
                    return 0
                print(f"[siyu] {key}: no lock in force", file=sys.stderr)
                return 1
        finally:
            await dispose_async_engines()

    cmd_migrate(args)
    return asyncio.run(run())


def cmd_run(args) -> int:
    if args.demo:
        os.environ["SIYU_DEMO"] = "true"
        reset_settings_cache()
    if get_settings().demo and get_settings().events_token is None:
        from nudges.demo import DEMO_TOKEN

        os.environ["SIYU_EVENTS_TOKEN"] = DEMO_TOKEN
        reset_settings_cache()
    if get_settings().demo and get_settings().im_identity_secret is None:
        # the chat page acts as the demo customers with signatures from the demo list; a raw sender
        # id stays an anonymous visitor, as in production
        os.environ["SIYU_IM_IDENTITY_SECRET"] = secrets.token_urlsafe(32)
        reset_settings_cache()
    # --- WeChat sandbox (issue 3): fresh fake credentials shared by the connectors and the sandbox ---
    if getattr(args, "sandbox", False):
        from channels.wechat.sandbox.config import sandbox_environment

        os.environ.update(sandbox_environment(get_settings()))
        reset_settings_cache()
    # --- end WeChat sandbox ---
    settings = get_settings()
    from bot.launcher import actions_child, rasa_child, say, supervise
    from bot.training import model_path

    say(f"database: {masked_url(settings.sync_database_url)}; redis: "
        f"{masked_url(settings.redis_url) if settings.redis_url else 'not configured (in-process stores)'}")
    code = cmd_seed_demo(args) if settings.demo else cmd_migrate(args)
    if code:
        return code
    prepare_knowledge(settings.demo)
    if not args.no_train:
        code = cmd_train(argparse.Namespace(force=False))
        if code:
            say("training failed")
            return code
    model = model_path(settings)
    if not model.exists():
        say(f"no model at {model}: run without --no-train")
        return 1
    url = f"http://{settings.host}:{settings.rasa_port}/webhooks/im/"
    from bot.launcher import console_child

    # the console first: the Rasa server pulls its model from it
    children = [console_child(settings, sys.executable, model), actions_child(settings, sys.executable),
                rasa_child(settings, model, sys.executable)]
    ready = (f"ready: open {url} to chat with {settings.shop.name}'s assistant (Ctrl-C stops)\n"
             f"support console: http://{settings.local_host}:{settings.console_port}/desk/")
    if settings.demo:
        ready += (" (demo staff agent1 / agent2 agents, lead supervisor, moderator; password: "
                  "SIYU_DEMO_STAFF_PASSWORD, default siyu-demo)")
    # --- WeChat gateway (issue 3): started when a connector is configured ---
    from channels.wechat.config import WeChatConfig

    wechat = WeChatConfig.from_settings(settings)
    if wechat.any_configured() or wechat.problems:
        from bot.launcher import wechat_gateway_child

        children.append(wechat_gateway_child(settings, sys.executable))
        ready += (f"\nWeChat callbacks: http://{settings.host}:{settings.wechat_port}/webhooks/<connector>/webhook "
                  f"(connectors: {', '.join(wechat.configured_names()) or 'none complete'})")
    # --- end WeChat gateway ---
    from bot.launcher import sop_scheduler_child

    children.append(sop_scheduler_child(settings, sys.executable))
    ready += f"\ngroup SOP (moderators): http://{settings.local_host}:{settings.console_port}/sop/"
    ready += (f"\nnudges (supervisors): http://{settings.local_host}:{settings.console_port}/nudges/; shop events: "
              f"POST http://{settings.local_host}:{settings.console_port}/api/events")
    if settings.demo and settings.events_token is not None:
        ready += (f" with Authorization: Bearer {settings.events_token.get_secret_value()}; a day of demo events: "
                  f"{sys.executable} -m nudges.demo play")
    # --- WeChat sandbox (issue 3) ---
    if getattr(args, "sandbox", False):
        from bot.launcher import wechat_sandbox_child

        children.insert(0, wechat_sandbox_child(settings, sys.executable))
        ready += "\n" + _wechat_sandbox_help(settings)
    # --- end WeChat sandbox ---
    return asyncio.run(supervise(children, ready))


# --- WeChat sandbox (issue 3) -------------------------------------------------------------------------
def _wechat_sandbox_help(settings) -> str:
    who = ""
    if settings.demo:
        from bot.log_format import mask_name
        from channels.wechat.sandbox.demo import link_demo_users

        linked = link_demo_users()
        if linked:
            who = f" (the demo users are demo customer {mask_name(linked[0])}, {linked[1]})"
    say_cmd = f"{sys.executable} -m channels.wechat.sandbox say"
    return (f"WeChat sandbox on http://127.0.0.1:{settings.wechat_sandbox_port}{who}; in another terminal:\n"
            f"  {say_cmd} --channel kf --user wmDemoUser01 我的订单到哪了      (微信客服)\n"
            f"  {say_cmd} --channel mp --user oDemoUser01 怎么开发票           (Official Account)\n"
            f"  {say_cmd} --channel mini --user oDemoUser01 有优惠券吗         (mini-program)\n"
            f"  {say_cmd} --channel group --user zhangsan 退货运费谁出         (@{settings.shop.bot_name} in a group)")
# --- end WeChat sandbox ---------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="siyu", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start the assistant")
    run.add_argument("--demo", action="store_true", help="create the demo shop and offer demo identities")
    run.add_argument("--no-train", action="store_true", help="use the existing model, do not train")
    run.add_argument("--sandbox", action="store_true",
                     help="also start the WeChat platform sandbox and point the WeChat connectors at it")
    run.set_defaults(func=cmd_run)
    train = sub.add_parser("train", help="train the model if needed")
    train.add_argument("--force", action="store_true")
    train.set_defaults(func=cmd_train)
    sub.add_parser("migrate", help="migrate the database").set_defaults(func=cmd_migrate)
    sub.add_parser("seed-demo", help="create the demo shop if empty").set_defaults(func=cmd_seed_demo)
    imp = sub.add_parser("import", help="import shop data")
    imp.add_argument("kind", choices=["products", "customers", "orders"])
    imp.add_argument("file", help="CSV (header row, UTF-8) or JSON (a list of objects)")
    imp.set_defaults(func=cmd_import)
    verification = sub.add_parser("verification", help="order-verification locks: list them, or lift one")
    verification.add_argument("action", choices=["locks", "unlock"])
    verification.add_argument("subject", nargs="?", default="",
                              help="unlock: an order number (SY…) or client:<address>")
    verification.add_argument("--by", default=os.environ.get("USER", "staff"), help="who lifts it (audit log)")
    verification.set_defaults(func=cmd_verification)
    staff = sub.add_parser("staff", help="console staff: add NAME --role ROLE (password prompted), disable / enable "
                                         "NAME, password NAME, list")
    staff.add_argument("action", choices=["add", "disable", "enable", "password", "list"])
    staff.add_argument("name", nargs="?", default="")
    staff.add_argument("--role", default="agent", choices=["agent", "supervisor", "moderator", "admin"])
    staff.add_argument("--display-name", default="")
    staff.add_argument("--by", default=os.environ.get("USER", "admin"), help="who does it (audit log)")
    staff.set_defaults(func=cmd_staff)
    args = parser.parse_args(argv)
    from bot.log_format import configure

    settings = get_settings()
    configure(settings.log_level, "text" if sys.stdout.isatty() else settings.log_format, process_name="siyu")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
