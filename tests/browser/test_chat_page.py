"""A real browser (Debian's Chromium driven by Playwright) chats on the demo page."""
from __future__ import annotations

import os
import shutil

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.model]

CHROMIUM = os.environ.get("SIYU_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]


@pytest.fixture(scope="module")
def chromium_path():
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        from tests.conftest import unavailable

        unavailable(f"Chromium not found at {CHROMIUM} (./siyu test installs Debian's chromium)")
    return CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")


def test_visitor_and_demo_customer_chat_in_the_browser(product_server, chromium_path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path, headless=True, args=ARGS)
        page = browser.new_page()
        page.goto(f"{product_server.base_url}/webhooks/im/")
        page.fill("#text", "你好")
        page.click("#send")
        expect(page.locator(".msg.bot .bubble").first).to_contain_text("小满生活馆", timeout=20_000)
        # act as a demo customer: "我的订单" lists that customer's orders as buttons
        expect(page.locator("#who option")).not_to_have_count(1, timeout=10_000)
        page.select_option("#who", index=1)
        page.fill("#text", "我的订单")
        page.press("#text", "Enter")
        expect(page.locator(".buttons button").first).to_be_visible(timeout=20_000)
        page.locator(".buttons button").first.click()
        expect(page.locator(".msg.bot .bubble").last).to_contain_text("订单 SY", timeout=20_000)
        browser.close()
