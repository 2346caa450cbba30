"""The support console in a real browser (Debian's Chromium driven by Playwright): two agents logged
in through the login page see a customer's "转人工" arrive live, race to claim it (one wins, the
other is told it is taken), the winner replies and hands the conversation back to the bot."""
from __future__ import annotations

import os
import re
import time

import pytest

from tests.browser.test_chat_page import ARGS, chromium_path  # noqa: F401 - the fixture is used by name

pytestmark = [pytest.mark.browser, pytest.mark.model]

PASSWORD = "siyu-demo"
VIEWPORT = {"width": 1366, "height": 768}
CLAIM_OUTCOME = ".toast-success:has-text('已接入会话'), .toast-error:has-text('已被他人接入')"


def login(browser, console_url: str, username: str, password: str = PASSWORD, lands: str = r"/desk/$"):
    """A fresh browser context logged in through the login page, on the workspace (a moderator is
    sent on to the SOP pages: `lands`)."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport=VIEWPORT, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{console_url}/desk/")
    expect(page).to_have_url(re.compile(r"/desk/login\?next=/desk/"))
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login-submit")
    expect(page).to_have_url(re.compile(lands), timeout=15_000)
    expect(page.locator("#me-name")).to_be_visible()
    return page


def queued_ids(page) -> set:
    data = page.evaluate("() => fetch('/api/desk/conversations?state=queued').then(r => r.json())")
    return {c["id"] for c in data["conversations"]}


def api_post(page, path: str, body=None) -> dict:
    """POST with the page's session and CSRF token, as the page's own script does; status and body."""
    return page.evaluate(
        """async ([path, body]) => {
             const me = await (await fetch('/api/me')).json();
             const r = await fetch(path, {method: 'POST', headers: {'Content-Type': 'application/json',
                                          'X-CSRF-Token': me.csrf_token}, body: JSON.stringify(body || {})});
             return {status: r.status, body: await r.json()};
           }""", [path, body])


def test_wrong_password_shows_an_error(product_server, chromium_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(f"{product_server.console_url}/desk/login")
        page.fill("#username", "agent1")
        page.fill("#password", "not-the-password")
        page.click("#login-submit")
        expect(page.locator("#login-error")).to_contain_text("用户名或密码错误")
        expect(page).to_have_url(re.compile(r"/desk/login"))
        # the workspace is still closed
        page.goto(f"{product_server.console_url}/desk/")
        expect(page).to_have_url(re.compile(r"/desk/login"))
        browser.close()


def test_two_agents_race_for_a_live_handoff_then_reply_and_hand_back(product_server, chromium_path, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    console = product_server.console_url
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=ARGS)
        agents = {name: login(browser, console, name) for name in ("agent1", "agent2")}
        lead = login(browser, console, "lead")
        for page in agents.values():
            expect(page.locator("#live-status.ok")).to_be_visible(timeout=10_000)
            page.locator(".presence-btn[data-presence=online]").click()
            expect(page.locator(".presence-btn[data-presence=online]")).to_have_class(re.compile("active"))
            # a marker that a reload would wipe: the handoff must arrive without one
            page.evaluate("() => { window.__noReload = true; }")
        before = queued_ids(agents["agent1"])

        # a customer asks for a person on the chat page
        customer = browser.new_context(viewport={"width": 420, "height": 760}).new_page()
        customer.goto(f"{product_server.base_url}/webhooks/im/")
        customer.fill("#text", "转人工")
        customer.click("#send")
        expect(customer.locator(".msg.bot .bubble").first).to_be_visible(timeout=20_000)

        # it reaches both agents live: queue, tab count, page title, sound
        new_item = agents["agent1"].locator(".queue-item[data-state=queued]")
        deadline = time.monotonic() + 20
        conversation = None
        while time.monotonic() < deadline and conversation is None:
            ids = {int(i) for i in new_item.evaluate_all("els => els.map(e => e.dataset.id)")}
            fresh = ids - before
            conversation = min(fresh) if fresh else None
            if conversation is None:
                time.sleep(0.1)
        assert conversation is not None, "the handoff did not appear in agent1's 待接入 list " \
            "(is action_request_human queueing it in the desk?)"
        item = f".queue-item[data-id='{conversation}']"
        for page in agents.values():
            expect(page.locator(item)).to_be_visible(timeout=10_000)
            expect(page.locator(item)).to_contain_text("顾客要求")
            expect(page.locator(item)).to_contain_text("普通")
            expect(page.locator(item + " .wait")).to_have_text(re.compile(r"^\d{2}:\d{2}$"))
            expect(page).to_have_title(re.compile(r"^\(\d+\) 会话工作台$"))
            count = int(page.locator("[data-count=queued]").inner_text())
            assert count >= 1
            assert page.evaluate("() => window.__noReload === true"), "the page reloaded"
            assert int(page.evaluate("() => document.body.dataset.beeps || '0'")) >= 1

        # both claim at once: exactly one wins, the other is told it is taken
        for page in agents.values():
            page.evaluate("(sel) => { document.querySelector(sel + ' .claim-btn').click(); }", item)
        outcomes = {}
        for name, page in agents.items():
            toast = page.locator(CLAIM_OUTCOME).first
            expect(toast).to_be_visible(timeout=15_000)
            outcomes[name] = "won" if "已接入会话" in toast.inner_text() else "lost"
        assert sorted(outcomes.values()) == ["lost", "won"], outcomes
        winner = next(name for name, outcome in outcomes.items() if outcome == "won")
        loser = next(name for name, outcome in outcomes.items() if outcome == "lost")
        win, lose = agents[winner], agents[loser]

        # the loser's list no longer offers it; the winner has it open under 我的
        expect(lose.locator(item)).to_have_count(0, timeout=10_000)
        expect(win.locator(".tab[data-tab=mine]")).to_have_class(re.compile("active"))
        expect(win.locator(item)).to_be_visible()
        expect(win.locator("#conv-tags")).to_contain_text("人工接待中")
        expect(win.locator("#transcript .msg-customer").first).to_contain_text("转人工")
        expect(win.locator("#context")).to_contain_text("转人工记录")
        # the loser may look but not write
        lose.locator(".tab[data-tab=all]").click()
        lose.locator(item).click()
        expect(lose.locator("#reply-text")).to_be_disabled()
        expect(lose.locator("#reply-disabled")).to_contain_text("接待")

        # canned replies: a supervisor adds one; the agent finds it and inserts it with the variables filled
        title = f"问候{int(time.time() * 1000) % 100000}"
        made = api_post(lead, "/api/desk/canned", {"title": title, "text": "您好{customer}，我是{shop}的{agent}"})
        assert made["status"] == 200, made
        expect(win.locator("#reply-text")).to_be_enabled()
        win.click("#canned-btn")
        win.fill("#canned-q", title)
        win.locator(".canned-item", has_text=title).click()
        expect(win.locator("#reply-text")).to_have_value(re.compile(r"^您好.+，我是小满生活馆的客服小[王李]$"))

        # the winner replies and sees how the delivery went
        win.fill("#reply-text", "您好，我是客服小王")
        win.click("#btn-send")
        reply = win.locator("#transcript .msg-agent").last
        expect(reply).to_contain_text("您好，我是客服小王", timeout=10_000)
        expect(reply.locator(".delivery")).to_have_text(re.compile("已送达|排队中|失败|未发送"))
        # an internal note is shown apart from the replies
        win.locator(".ctab[data-pane=note]").click()
        win.fill("#note-text", "顾客第一次咨询，已安抚")
        win.click("#btn-note")
        expect(win.locator("#transcript .note").last).to_contain_text("顾客第一次咨询")

        # the workspace with the conversation open (SIYU_DESK_SCREENSHOT=path keeps it for a look)
        win.screenshot(path=os.environ.get("SIYU_DESK_SCREENSHOT") or str(tmp_path / "desk.png"))

        # hand back: it leaves 我的
        win.click("#btn-handback")
        expect(win.locator(".toast-success:has-text('交还机器人')")).to_be_visible(timeout=10_000)
        expect(win.locator(item)).to_have_count(0, timeout=10_000)
        expect(win.locator("#conv-tags")).to_contain_text("机器人接待中")
        expect(win.locator("#transcript")).to_contain_text("交还机器人")

        # a moderator may log in but not take conversations
        moderator = login(browser, console, "moderator", lands=r"/sop/$")
        expect(moderator.locator(".presence-btn")).to_have_count(0)
        refused = api_post(moderator, f"/api/desk/conversations/{conversation}/claim")
        assert refused["status"] == 403, refused
        browser.close()
