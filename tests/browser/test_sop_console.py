"""The community SOP pages in a real browser (Debian's Chromium driven by Playwright): a moderator
logs in, lands on the SOP plans, writes a plan for two demo groups while the preview shows each
group's post with its name filled in, schedules it for a minute from now and watches the execution
log show one run per group without reloading. An agent is refused the pages and the API."""
from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from tests.browser.test_chat_page import ARGS, chromium_path  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.browser, pytest.mark.model]

PASSWORD = "siyu-demo"
VIEWPORT = {"width": 1366, "height": 768}
SHOP_TZ = ZoneInfo("Asia/Shanghai")
GROUPS = ("wrDemoGroup01", "wrDemoGroup02")


def login(browser, console_url: str, username: str, next_path: str):
    """A fresh browser context logged in through the login page, which then opens `next_path`."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{console_url}/desk/login?next={next_path}")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("#login-submit")
    expect(page).to_have_url(f"{console_url}{next_path}", timeout=15_000)
    return page


def api_get(page, path: str) -> dict:
    return page.evaluate("""async (path) => {
        const r = await fetch(path, {headers: {Accept: 'application/json'}});
        return {status: r.status, body: await r.json().catch(() => null)};
    }""", path)


def test_moderator_plans_a_post_previews_it_and_sees_it_fire(product_server, chromium_path, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    console = product_server.console_url
    name = f"测试早安{datetime.now().strftime('%H%M%S')}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=ARGS)
        page = login(browser, console, "moderator", "/sop/")
        # the SOP sidebar only; the desk is not for moderators
        expect(page.locator(".nav-item")).to_have_count(5)
        expect(page.locator(".nav-item.active")).to_contain_text("SOP 计划")
        expect(page.locator("#scheduler-status")).to_have_text(re.compile("调度器(运行中|未运行)"))
        groups = api_get(page, "/api/sop/groups")
        assert groups["status"] == 200, groups
        names = {g["chat_id"]: g["name"] for g in groups["body"]["groups"]}
        assert set(GROUPS) <= set(names), f"demo groups missing: {sorted(names)}"

        # a new plan: two groups, every day, a text with the group's name
        page.click("#new-plan")
        expect(page.locator("#plan-drawer")).to_be_visible()
        page.fill("#plan-name", name)
        for chat_id in GROUPS:
            page.check(f"#target-groups input.group-check[value={chat_id}]")
        expect(page.locator("#groups-picked")).to_contain_text("已选 2 个群")
        page.select_option("#schedule-kind", "daily")
        page.fill("#schedule-time", "09:30")
        page.fill("#content-editor .block[data-type=text] textarea", "早上好，")
        page.click("#content-editor .var-btn[data-var='{群名}']")
        expect(page.locator("#content-editor .block[data-type=text] textarea")).to_have_value("早上好，{群名}")

        # the preview shows what each group receives, the variable filled in
        for chat_id in GROUPS:
            bubble = page.locator(f"#preview .preview-group[data-chat-id={chat_id}] .preview-bubble").first
            expect(bubble).to_have_text(f"早上好，{names[chat_id]}", timeout=15_000)
        expect(page.locator("#preview-next .next-time").first).to_contain_text("09:30")

        # once, a minute or so from now (the shop's time zone), then save
        at = (datetime.now(SHOP_TZ) + timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M")
        page.select_option("#schedule-kind", "once")
        page.fill("#schedule-at", at)
        page.click("#plan-save")
        expect(page.locator("#plan-drawer")).to_be_hidden(timeout=15_000)
        row = page.locator(".plan-row", has_text=name)
        expect(row).to_be_visible(timeout=15_000)
        expect(row).to_contain_text("单次")
        expect(row.locator(".tag", has_text="启用")).to_be_visible()
        page.screenshot(path=str(tmp_path / "sop-plans.png"))

        # the execution log fills in by itself when the plan fires (the page polls every 3 s)
        page.evaluate("() => { window.__noReload = true; }")
        row.locator(".plan-runs").click()
        expect(page).to_have_url(re.compile(r"/sop/plans/\d+$"))
        expect(page.locator("#plan-title")).to_have_text(name)
        page.evaluate("() => { window.__noReload = true; }")
        runs = page.locator(".run-row")
        expect(runs).to_have_count(2, timeout=120_000)
        assert page.evaluate("() => window.__noReload === true"), "the page reloaded"
        chats = set(runs.evaluate_all("rows => rows.map(r => r.dataset.chatId)"))
        assert chats == set(GROUPS), chats
        for status in runs.evaluate_all("rows => rows.map(r => r.dataset.status)"):
            # whether a post reaches WeChat depends on its configuration: handed over or sent
            assert status in ("pending", "sent"), status
        page.screenshot(path=str(tmp_path / "sop-runs.png"))

        # the other pages open without errors
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        for path, selector in (("/sop/calendar", ".cal-day"), ("/sop/moderation", "#moderation-notice"),
                               ("/sop/keywords", "#keywords-table"), ("/sop/metrics", ".vcol")):
            page.goto(console + path)
            expect(page.locator(selector).first).to_be_visible(timeout=10_000)
        assert not errors, errors
        # a moderator asking for the desk is sent to the SOP pages
        page.goto(f"{console}/desk/")
        expect(page).to_have_url(f"{console}/sop/")

        # an agent gets neither the pages nor the API
        agent = login(browser, console, "agent1", "/desk/")
        response = agent.goto(f"{console}/sop/")
        assert response.status == 403, response.status
        assert api_get(agent, "/api/sop/plans")["status"] == 403
        browser.close()
