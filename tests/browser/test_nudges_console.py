"""The nudges pages in a real browser (Debian's Chromium driven by Playwright).

A supervisor writes a rule in the editor (a bad variable first: the API's Chinese error shows by the
form), keeps the form and the JSON in step, edits it to need approval, enables it (it waits: 待审批),
approves it, pauses it, exports the rules as JSON and imports the file back, then deletes it. With a
known history of the shipped cart reminder inserted into the database, the report shows the API's
figures (sent, control, suppression and exit reasons in Chinese, conversions, the uplift with its
interval) and 样本不足 for a rule with a handful of nudges; a customer's page shows the nudge log
and the 退订 button flips the customer's consent; the events page plays the demo's day. Agents get
only a customer's log; moderators none of it."""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Dict, Optional

import pytest

from tests.browser.test_chat_page import ARGS, chromium_path  # noqa: F401 - the fixture is used by name
from tests.browser.test_sop_console import api_get, login

pytestmark = [pytest.mark.browser, pytest.mark.model]

CART = "cart_abandonment"
FOLLOWUP = "first_order_followup"
# the inserted history's customers: C10011 on (the demo's day of events is about C10001-C10005)
FIRST_CUSTOMER = 10011
LOGGED = f"C{FIRST_CUSTOMER}"


# --- screenshots: only with a CJK font (without one the Chinese text is boxes) --------------------
def cjk_fonts() -> bool:
    try:
        found = subprocess.run(["fc-list", ":lang=zh"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(found.strip())


def shots(tmp_path: Path) -> Optional[Path]:
    """Where screenshots go (SIYU_DESK_SCREENSHOT_DIR keeps them for a look); None without fonts-noto-cjk."""
    if not cjk_fonts():
        print("\nno CJK font (fonts-noto-cjk): nudges screenshots skipped")
        return None
    folder = Path(os.environ.get("SIYU_DESK_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def shoot(page, folder: Optional[Path], name: str) -> None:
    if folder is not None:
        page.screenshot(path=str(folder / f"nudges-{name}.png"))


# --- the API and the database ----------------------------------------------------------------------
def report_of(page, days: int = 30) -> Dict[str, dict]:
    answer = api_get(page, f"/api/nudges/report?days={days}")
    assert answer["status"] == 200, answer
    return {r["rule"]: r for r in answer["body"]["rules"]}


def seed_history(database_url: str) -> None:
    """Two days ago: the shipped cart reminder sent to 40 customers (12 paid within the hour) and
    held out for 10 (1 paid), suppressed 5 times (3 in quiet hours, 2 opted out) and exited twice;
    the first-order follow-up sent 3 times (1 paid) and held out once. Every nudge is in the log;
    LOGGED's log has all five states. Inserted as the scheduler and the shop's events would have."""
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    from actions.db.engine import create_sync_engine
    from actions.db.models import Customer
    from bot.settings import reset_settings_cache
    from nudges.models import EXITED, HOLDOUT, SCHEDULED, SENT, SUPPRESSED, Nudge, NudgeEvent, NudgeLogEntry, NudgeRule

    os.environ["DATABASE_URL"] = database_url
    reset_settings_cache()
    engine = create_sync_engine()
    details = {"quiet_hours": "免打扰时段", "opted_out": "客户已退订此类消息", "paid": "客户已付款",
               "holdout": "对照组：本应发送，按实验不发"}
    tag = uuid.uuid4().hex[:8]
    base = datetime.utcnow() - timedelta(days=2)
    try:
        with Session(engine) as s:
            rules = {r.key: r for r in s.execute(sa.select(NudgeRule).where(NudgeRule.key.in_((CART, FOLLOWUP))))
                     .scalars()}
            assert set(rules) == {CART, FOLLOWUP}, f"the demo's shipped rules are missing: {sorted(rules)}"
            numbers = [f"C{FIRST_CUSTOMER + i}" for i in range(54)]
            ids = dict(s.execute(sa.select(Customer.external_id, Customer.id)
                                 .where(Customer.external_id.in_(numbers))).all())
            assert len(ids) == len(numbers), "the demo shop has fewer customers than the test needs"
            made = 0

            def nudge(key: str, index: int, status: str, reason: Optional[str] = None, paid: bool = False) -> None:
                nonlocal made
                made += 1
                rule, number = rules[key], numbers[index]
                at = base + timedelta(minutes=made)
                ref = f"test-{tag}-{made}"
                row = Nudge(rule_id=rule.id, rule_key=key, customer_id=ids[number], ref=ref,
                            dedupe_key=f"{key}:{ids[number]}:{ref}", trigger_at=at - timedelta(minutes=30), due_at=at,
                            category="marketing", priority=2, arm="control" if status == HOLDOUT else "treatment",
                            status=status, reason=reason, detail=details.get(reason or "", ""),
                            channel="wecom_kf" if status == SENT else None, decided_at=at,
                            text="测试消息" if status == SENT else None, context={"test": tag})
                s.add(row)
                s.flush()
                if index == 0 and status == SENT:
                    s.add(NudgeLogEntry(nudge_id=row.id, customer_id=ids[number], rule_key=key, status=SCHEDULED,
                                        detail="", at=at - timedelta(minutes=30)))
                s.add(NudgeLogEntry(nudge_id=row.id, customer_id=ids[number], rule_key=key, status=status,
                                    reason=reason, detail=details.get(reason or "", ""), at=at))
                if paid:
                    s.add(NudgeEvent(event_id=f"test-{tag}-paid-{made}", type="order_paid", customer=number,
                                     customer_id=ids[number], ref=f"TEST-{tag}-{made}", at=at + timedelta(hours=1),
                                     data={"amount": 199}, source="test", status="done", note="test history",
                                     received_at=at + timedelta(hours=1), processed_at=at + timedelta(hours=1)))

            for i in range(40):
                nudge(CART, i, SENT, paid=1 <= i <= 12)
            for i in range(40, 50):
                nudge(CART, i, HOLDOUT, "holdout", paid=i == 41)
            for i in (0, 2, 3):
                nudge(CART, i, SUPPRESSED, "quiet_hours")
            for i in (4, 5):
                nudge(CART, i, SUPPRESSED, "opted_out")
            for i in (0, 6):
                nudge(CART, i, EXITED, "paid")
            for i in (50, 51, 52):
                nudge(FOLLOWUP, i, SENT, paid=i == 51)
            nudge(FOLLOWUP, 0, HOLDOUT, "holdout")
            s.commit()
    finally:
        engine.dispose()


def text_of(locator) -> str:
    return re.sub(r"\s+", " ", locator.inner_text()).strip()


def js_round(value: float) -> int:
    """JavaScript's Math.round (halves up), as the page rounds."""
    return math.floor(value + 0.5)


def pct(rate) -> str:
    """A rate as the page writes it: "29.3%"."""
    return "—" if rate is None else f"{js_round(rate * 1000) / 10:.1f}%"


def points(value) -> str:
    """A difference of rates in percentage points as the page writes it: "+12.2", "-3.0", "0.0"."""
    n = js_round(value * 1000) / 10
    return ("+" if n > 0 else "") + f"{n:.1f}"


# --- the tests --------------------------------------------------------------------------------------
def test_supervisor_writes_approves_pauses_exports_and_imports_a_rule(product_server, chromium_path, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    console = product_server.console_url
    stamp = datetime.now().strftime("%H%M%S")
    name, key = f"测试回访{stamp}", f"test_followup_{stamp}"
    folder = shots(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=ARGS)
        page = login(browser, console, "lead", "/nudges/")
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        expect(page.locator(".nav-item.active")).to_have_text(re.compile("触达"))
        expect(page.locator(".nudge-tab.active")).to_have_text("规则")
        expect(page.locator(f".rule-row[data-key={CART}]")).to_be_visible(timeout=10_000)
        expect(page.locator(f".rule-row[data-key={CART}] .rule-status")).to_have_text(
            re.compile("运行中|已暂停|待审批"))
        shoot(page, folder, "rules")

        # a new rule through the form; the JSON beside it follows the form
        page.click("#new-rule")
        expect(page).to_have_url(f"{console}/nudges/rules/new")
        page.fill("#rule-name", name)
        page.fill("#rule-key", key)
        page.select_option("#trigger-event", "order_delivered")
        page.fill("#delay-minutes", "60")
        page.fill("#send-within", "120")
        page.fill("#cond-levels", "金卡会员, 黑卡会员")
        page.fill("#cond-value-min", "100")
        page.check(".exit-check[value=open_ticket]")
        page.select_option("#rule-priority", "lifecycle")
        page.fill("#cap-cooldown", "14")
        page.fill("#holdout-pct", "80")
        page.check("input[name=quiet-hours][value=drop]")
        page.fill(".persona-text[data-persona=专业顾问]", "{称呼}您好，祝您{生日}快乐")
        page.fill("#variant-b", "{称呼}，用得还习惯吗？")
        page.select_option("#products-mode", "spus")
        page.fill("#products-spus", "NZ1001, NZ1002")
        # a share out of range is said in Chinese before anything is sent
        page.click("#rule-save")
        expect(page.locator("#rule-error")).to_have_text("对照组比例（%）：需要在 0 到 50 之间")
        page.fill("#holdout-pct", "20")
        expect(page.locator("#rule-error")).to_be_hidden()
        definition = json.loads(page.input_value("#rule-json"))
        assert definition["key"] == key and definition["holdout"] == 0.2, definition
        assert definition["trigger"] == {"event": "order_delivered"}
        assert definition["conditions"]["levels"] == ["金卡会员", "黑卡会员"]
        assert definition["conditions"]["value_yuan"] == {"min": 100}
        assert definition["message"]["products"] == ["NZ1001", "NZ1002"]
        assert definition["message"]["variants"] == [{"name": "B", "text": "{称呼}，用得还习惯吗？"}]

        # a variable the shop does not have: the API's 400, its reason in Chinese by the form
        creating = f"{console}/api/nudges/rules"
        with page.expect_response(lambda r: r.url == creating and r.request.method == "POST") as sent:
            page.click("#rule-save")
        assert sent.value.status == 400, sent.value.status
        expect(page.locator("#rule-error")).to_be_visible(timeout=10_000)
        expect(page.locator("#rule-error")).to_contain_text("未知的变量 {生日}")
        expect(page).to_have_url(f"{console}/nudges/rules/new")

        # fixed, with a variable from the hint bar at the cursor
        text = page.locator(".persona-text[data-persona=专业顾问]")
        text.fill("{称呼}您好，最近在")
        text.focus()
        page.click(".var-btn[data-var='{店名}']")
        expect(text).to_have_value("{称呼}您好，最近在{店名}")
        expect(page.locator("#rule-error")).to_be_hidden()
        page.locator(".persona-text[data-persona=热情闺蜜]").fill("{称呼}～东西收到啦？喜欢吗💕")
        shoot(page, folder, "editor")
        page.click("#rule-save")
        expect(page).to_have_url(f"{console}/nudges/", timeout=10_000)
        row = page.locator(f".rule-row[data-key={key}]")
        expect(row).to_be_visible(timeout=10_000)
        expect(row).to_contain_text(name)
        expect(row.locator(".rule-status")).to_have_text("已暂停")
        rules = api_get(page, "/api/nudges/rules")["body"]["rules"]
        saved = next(r for r in rules if r["key"] == key)
        stored = saved["definition"]
        assert stored["delay"]["minutes"] == 60 and stored["send_within_minutes"] == 120, stored
        assert stored["exits"] == ["open_ticket"] and stored["quiet_hours"] == "drop", stored
        assert stored["cap"]["cooldown_days"] == 14, stored
        assert stored["message"]["text"] == {"专业顾问": "{称呼}您好，最近在{店名}",
                                             "热情闺蜜": "{称呼}～东西收到啦？喜欢吗💕"}
        assert stored["requires_approval"] is False

        # edit: the JSON drives the form too; then it needs approval
        row.locator(".rule-edit").click()
        expect(page).to_have_url(f"{console}/nudges/rules/{saved['id']}")
        expect(page.locator("#rule-key")).to_have_value(key)
        assert page.locator("#rule-key").evaluate("el => el.readOnly")
        expect(page.locator("#rule-name")).to_have_value(name)
        expect(page.locator("#holdout-pct")).to_have_value("20")
        edited = json.loads(page.input_value("#rule-json"))
        edited["cap"]["per_day"] = 50
        edited["description"] = "签收后一小时问候"
        page.fill("#rule-json", json.dumps(edited, ensure_ascii=False, indent=2))
        expect(page.locator("#cap-per-day")).to_have_value("50")
        expect(page.locator("#rule-description")).to_have_value("签收后一小时问候")
        page.fill("#rule-json", "{ not json")
        expect(page.locator("#json-error")).to_contain_text("JSON 格式错误")
        page.click("#rule-save")
        expect(page.locator("#rule-error")).to_contain_text("JSON 格式有误")
        page.check("#requires-approval")  # the form takes over again
        expect(page.locator("#json-error")).to_be_hidden()
        assert json.loads(page.input_value("#rule-json"))["requires_approval"] is True
        page.fill("#rule-name", name + "改")
        page.click("#rule-save")
        expect(page).to_have_url(f"{console}/nudges/", timeout=10_000)
        expect(row).to_contain_text(name + "改")
        expect(row).to_contain_text("需审批")
        expect(row.locator(".rule-status")).to_have_text("已暂停")

        # enabling a rule under approval makes it wait; a supervisor approves it; then it is paused
        row.locator(".rule-enable").click()
        expect(row.locator(".rule-status")).to_have_text("待审批", timeout=10_000)
        expect(page.locator(".toast-warning", has_text="需要审批")).to_be_visible()
        row.locator(".rule-approve").click()
        page.locator(".dialog-confirm button", has_text="审批通过").click()
        expect(row.locator(".rule-status")).to_have_text("运行中", timeout=10_000)
        expect(row.locator(".rule-approve")).to_have_count(0)
        row.locator(".rule-pause").click()
        expect(row.locator(".rule-status")).to_have_text("已暂停", timeout=10_000)
        approved = next(r for r in api_get(page, "/api/nudges/rules")["body"]["rules"] if r["key"] == key)
        assert approved["status"] == "paused" and approved["approved_by"] == "lead", approved

        # export: the file holds every rule's definition
        with page.expect_download() as download:
            page.click("#export-rules")
        exported_path = download.value.path()
        exported = json.loads(Path(exported_path).read_text(encoding="utf-8"))
        keys = [r["key"] for r in exported["rules"]]
        assert key in keys and CART in keys, keys
        mine = next(r for r in exported["rules"] if r["key"] == key)
        assert mine["name"] == name + "改" and mine["requires_approval"] is True and mine["cap"]["per_day"] == 50

        # import: a broken rule is refused whole, with the reason; the exported file goes back in
        page.click("#import-rules")
        page.fill("#import-text", json.dumps({"rules": [{"key": "bad rule"}]}))
        page.click("#import-submit")
        expect(page.locator("#import-result")).to_contain_text("导入失败：第 1 条规则")
        page.set_input_files("#import-file", exported_path)
        expect(page.locator("#import-text")).to_have_value(re.compile(key))
        page.click("#import-submit")
        expect(page.locator("#import-result")).to_contain_text(f"新建 0 条，更新 {len(keys)} 条")
        page.click("#import-cancel")
        expect(row.locator(".rule-status")).to_have_text("已暂停")

        # deleted (after a confirmation): gone from the list, kept for the log and the report
        row.locator(".rule-delete").click()
        page.locator(".dialog-confirm button", has_text="删除").click()
        expect(row).to_have_count(0, timeout=10_000)
        assert key not in [r["key"] for r in api_get(page, "/api/nudges/rules")["body"]["rules"]]
        assert not errors, errors
        browser.close()


def test_report_customer_log_consent_and_events(product_server, chromium_path, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    console = product_server.console_url
    folder = shots(tmp_path)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=ARGS)
        page = login(browser, console, "lead", "/nudges/report")
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        before = report_of(page)
        seed_history(product_server.database_url)
        after = report_of(page)
        cart, old = after[CART], before[CART]
        assert cart["sent"] - old["sent"] == 40 and cart["holdout"] - old["holdout"] == 10, cart
        assert cart["suppressed"].get("quiet_hours", 0) - old["suppressed"].get("quiet_hours", 0) == 3, cart
        assert cart["suppressed"].get("opted_out", 0) - old["suppressed"].get("opted_out", 0) == 2, cart
        assert cart["exited"].get("paid", 0) - old["exited"].get("paid", 0) == 2, cart
        assert cart["treatment"]["conversions"] - old["treatment"]["conversions"] == 12, cart
        assert cart["control"]["conversions"] - old["control"]["conversions"] == 1, cart
        assert cart["uplift"]["ci"] is not None

        # the page shows the API's figures, reasons in Chinese
        page.reload()
        card = page.locator(f".report-card[data-rule={CART}]")
        expect(card).to_be_visible(timeout=10_000)
        expect(card.locator(".rstat[data-stat=sent] .rstat-value")).to_have_text(str(cart["sent"]))
        expect(card.locator(".rstat[data-stat=holdout] .rstat-value")).to_have_text(str(cart["holdout"]))
        expect(card.locator(".rstat[data-stat=suppressed] .rstat-value")).to_have_text(str(cart["suppressed_total"]))
        expect(card.locator(".rstat[data-stat=holdout] .rstat-label")).to_have_text("对照组（本应发送）")
        quiet = card.locator(".reason-box[data-kind=suppressed] .reason-item[data-reason=quiet_hours]")
        expect(quiet).to_contain_text("免打扰时段")
        expect(quiet.locator(".reason-n")).to_have_text(str(cart["suppressed"]["quiet_hours"]))
        expect(card.locator(".reason-box[data-kind=suppressed] .reason-item[data-reason=opted_out]")).to_contain_text(
            "客户已退订此类消息")
        expect(card.locator(".reason-box[data-kind=exited] .reason-item[data-reason=paid]")).to_contain_text(
            "客户已付款")
        treated = card.locator(".arm-row[data-arm=treatment]")
        expect(treated.locator(".arm-n")).to_have_text(str(cart["treatment"]["n"]))
        expect(treated.locator(".arm-conversions")).to_have_text(str(cart["treatment"]["conversions"]))
        expect(treated.locator(".arm-rate")).to_have_text(pct(cart["treatment"]["rate"]))
        expect(card.locator(".arm-row[data-arm=control] .arm-rate")).to_have_text(pct(cart["control"]["rate"]))
        uplift = cart["uplift"]
        expect(card.locator(".uplift-diff")).to_have_text(points(uplift["difference"]) + " 个百分点")
        expect(card.locator(".uplift-ci")).to_have_text(
            f"95% 置信区间 {points(uplift['ci'][0])} ~ {points(uplift['ci'][1])} 个百分点")
        expect(card.locator(".uplift-p")).to_contain_text("p ")
        expect(card.locator(".uplift-verdict")).to_have_text(
            ("显著" if uplift["significant"] else "不显著") if uplift["enough_data"] else "样本不足")
        # a handful of nudges: the page says the sample is too small
        followup = page.locator(f".report-card[data-rule={FOLLOWUP}]")
        assert not after[FOLLOWUP]["uplift"]["enough_data"]
        expect(followup.locator(".uplift-verdict")).to_have_text("样本不足")
        expect(followup.locator(".rstat[data-stat=sent] .rstat-value")).to_have_text(str(after[FOLLOWUP]["sent"]))
        shoot(page, folder, "report")
        # 90 days: the longer window's figures
        longer = report_of(page, 90)[CART]
        page.select_option("#report-days", "90")
        expect(page).to_have_url(re.compile(r"/nudges/report\?days=90$"))
        expect(card.locator(".rstat[data-stat=sent] .rstat-value")).to_have_text(str(longer["sent"]), timeout=10_000)
        expect(card.locator(".arm-row[data-arm=control] .arm-n")).to_have_text(str(longer["control"]["n"]))

        # the rules list carries the same 30 days' figures
        page.goto(f"{console}/nudges/")
        cart_row = page.locator(f".rule-row[data-key={CART}]")
        expect(cart_row.locator(".stat-sent")).to_have_text(str(cart["sent"]), timeout=10_000)
        expect(cart_row.locator(".stat-holdout")).to_have_text(str(cart["holdout"]))
        expect(cart_row.locator(".conv-rates")).to_have_text(
            f"{pct(cart['treatment']['rate'])} / {pct(cart['control']['rate'])}")

        # a customer's log: every state in Chinese, with the reason; consent flipped and back
        page.goto(f"{console}/nudges/customers?customer={LOGGED}")
        rows = page.locator(".log-row")
        expect(rows.first).to_be_visible(timeout=10_000)
        # (the scheduler's own scans may log other rules for this customer: only the inserted rules count)
        statuses = {status: text for status, text, rule in rows.evaluate_all(
            "rows => rows.map(r => [r.dataset.status, r.querySelector('.log-status').textContent, r.dataset.rule])")
            if rule in (CART, FOLLOWUP)}
        assert statuses == {"scheduled": "已计划", "sent": "已发送", "suppressed": "已拦截", "holdout": "对照组",
                            "exited": "已退出"}, statuses
        expect(page.locator(f".log-row[data-status=suppressed][data-rule={CART}]")).to_contain_text("免打扰时段")
        expect(page.locator(f".log-row[data-status=exited][data-rule={CART}]")).to_contain_text("客户已付款")
        expect(page.locator(f".log-row[data-status=sent][data-rule={CART}]")).to_contain_text("购物车放弃提醒")
        marketing = page.locator("#consent-marketing")
        expect(marketing).to_have_attribute("data-granted", "true")
        shoot(page, folder, "customer")
        page.click("#opt-out")
        page.locator(".dialog-confirm button", has_text="退订").click()
        expect(marketing).to_have_attribute("data-granted", "false", timeout=10_000)
        expect(marketing).to_contain_text("已退订")
        expect(page.locator("#opt-in")).to_be_visible()
        expect(page.locator("#consent-history")).to_contain_text("营销消息：退订")
        profile = api_get(page, f"/api/nudges/customers/{LOGGED}")["body"]
        assert profile["consent"]["marketing"] is False and profile["consent"]["source"] == "staff:lead", profile
        page.click("#opt-in")
        page.locator(".dialog-confirm button", has_text="恢复").click()
        expect(marketing).to_have_attribute("data-granted", "true", timeout=10_000)
        assert api_get(page, f"/api/nudges/customers/{LOGGED}")["body"]["consent"]["marketing"] is True
        # another customer from the search box; an unknown one is said so
        page.fill("#customer-number", "C99999")
        page.click("#customer-search")
        expect(page.locator("#customer-error")).to_have_text("没有这位客户：C99999")
        page.fill("#customer-number", "C10012")
        page.click("#customer-search")
        expect(page.locator(f".log-row[data-status=sent][data-rule={CART}]")).to_have_count(1, timeout=10_000)
        expect(page).to_have_url(re.compile(r"customer=C10012$"))

        # events: counts, the latest events, segments; the demo's day of events
        page.goto(f"{console}/nudges/events")
        expect(page.locator(".event-row").first).to_be_visible(timeout=10_000)
        expect(page.locator("#segments")).not_to_contain_text("加载中")
        page.click("#demo-play")
        expect(page.locator("#demo-result")).to_contain_text("已回放 10 个演示事件", timeout=15_000)
        expect(page.locator(".event-row[data-type=checkout_started]").first).to_be_visible(timeout=10_000)
        expect(page.locator(".event-row[data-type=checkout_started]").first).to_contain_text("开始结算")
        shoot(page, folder, "events")
        assert not errors, errors

        # agents: a customer's log only; moderators: none of it
        agent = login(browser, console, "agent1", "/desk/")
        expect(agent.locator(".nav-item", has_text="触达记录")).to_have_attribute("href", "/nudges/customers")
        for path in ("/nudges/", "/nudges/rules/new", "/nudges/report", "/nudges/events"):
            assert agent.goto(f"{console}{path}").status == 403, path
        assert api_get(agent, "/api/nudges/rules")["status"] == 403
        agent.goto(f"{console}/nudges/customers?customer={LOGGED}")
        expect(agent.locator(".log-row").first).to_be_visible(timeout=10_000)
        expect(agent.locator(".nudge-tabs")).to_have_count(0)
        moderator = login(browser, console, "moderator", "/sop/")
        expect(moderator.locator(".nav-item", has_text="触达")).to_have_count(0)
        for path in ("/nudges/", f"/nudges/customers?customer={LOGGED}"):
            assert moderator.goto(f"{console}{path}").status == 403, path
        browser.close()
