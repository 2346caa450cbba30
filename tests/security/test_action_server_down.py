"""The whole product as subprocesses (`python -m bot run`): the action server only answers the
Rasa server (shared secret), and when it is killed (kill -9) the product keeps running, customers
get an apology instead of an empty reply, and after the supervisor restarted it the conversation
goes on normally."""
from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Dict, Optional

import aiohttp
import pytest
import sqlalchemy as sa

from tests.conftest import product_env, seed
from tests.support import PYTHON, REPO, ProductProcess, free_port

pytestmark = pytest.mark.model

APOLOGY = "系统正在恢复中"
WEBHOOK_BODY = {"next_action": "action_session_start", "sender_id": "im:u10002", "version": "3.6.21",
                "tracker": {"sender_id": "im:u10002", "slots": {}, "latest_message": {}, "events": [],
                            "paused": False, "followup_action": None, "active_loop": {},
                            "latest_action_name": None}}


@pytest.fixture(scope="module", params=["speedups", "rasa_as_it_ships"])
def product(request, trained_model, tmp_path_factory):
    """A product of its own (its action server gets killed), with no SIYU_ACTION_SECRET configured:
    the run command makes one; with and without the Rasa speed-ups (SIYU_RASA_SPEEDUPS)."""
    var_dir = tmp_path_factory.mktemp("action_server_down")
    url = f"sqlite:///{var_dir / 'shop.db'}"
    seed(url)
    env = product_env(url, var_dir)
    env.pop("SIYU_ACTION_SECRET", None)
    env["SIYU_RASA_SPEEDUPS"] = "true" if request.param == "speedups" else "false"
    product = ProductProcess(env, var_dir / "product.log")
    product.start()
    try:
        yield product
    finally:
        assert product.stop() == 0, "the product did not stop cleanly on Ctrl-C"


def child_pid(parent: int, module: str) -> int:
    """The pid of the child process of `parent` running `python -m <module>`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and module.encode() in argv:
            return int(stat.parent.name)
    raise AssertionError(f"no child process running {module}")


def environment_of(pid: int) -> Dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(p.decode().split("=", 1) for p in pairs if b"=" in p)


def action_url(product: ProductProcess, path: str) -> str:
    return f"http://127.0.0.1:{product.env['SIYU_ACTION_PORT']}{path}"


async def say(product: ProductProcess, sender: str, message: str) -> list:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        async with http.post(f"{product.base_url}/webhooks/im/webhook",
                             json={"sender": sender, "message": message}) as answer:
            assert answer.status == 200
            return await answer.json()


def texts(reply: list) -> str:
    return "\n".join(m.get("text") or "" for m in reply)


async def wait_for_log(product: ProductProcess, line: str, after: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while line not in product.log.read_text(errors="replace")[after:]:
        assert product.alive(), "the product stopped"
        assert time.monotonic() < deadline, f"no {line!r} in the log within {timeout_s} s"
        await asyncio.sleep(0.2)


async def kill_the_action_server(product: ProductProcess) -> int:
    """kill -9 of the action server; the log position from where its restart will be reported."""
    await say(product, f"warm{uuid.uuid4().hex[:6]}", "你好")  # Rasa answers fast from here on
    mark = len(product.log.read_text(errors="replace"))
    os.kill(child_pid(product.process.pid, "actions.server"), 9)
    await wait_for_log(product, "[siyu] actions crashed (killed by SIGKILL)", mark, timeout_s=30)
    return mark


def restarted_yet(product: ProductProcess, mark: int) -> bool:
    return "[siyu] actions is ready again" in product.log.read_text(errors="replace")[mark:]


async def test_the_action_server_refuses_calls_without_the_shared_secret(product):
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        async with http.get(action_url(product, "/health")) as answer:
            assert answer.status == 200
        # another customer's conversation, asked for directly
        async with http.post(action_url(product, "/webhook"), json=WEBHOOK_BODY) as answer:
            assert answer.status == 401 and "error" in await answer.json()
        async with http.post(action_url(product, "/webhook"), json=WEBHOOK_BODY,
                             headers={"Authorization": "Bearer not-the-secret"}) as answer:
            assert answer.status == 403 and "error" in await answer.json()
        async with http.get(action_url(product, "/actions")) as answer:
            assert answer.status == 401
        # the secret the run command made for this start and gave the action server
        secret = environment_of(child_pid(product.process.pid, "actions.server"))["SIYU_ACTION_SECRET"]
        assert len(secret) >= 32
        async with http.post(action_url(product, "/webhook"), json=WEBHOOK_BODY,
                             headers={"Authorization": f"Bearer {secret}"}) as answer:
            assert answer.status == 200
            assert any(e["event"] == "session_started" for e in (await answer.json())["events"])
    # the Rasa server shows it (its answers need the actions), and it is written nowhere
    assert "小满生活馆" in texts(await say(product, f"auth{uuid.uuid4().hex[:6]}", "你好"))
    assert secret == environment_of(child_pid(product.process.pid, "bot.rasa_server"))["SIYU_ACTION_SECRET"]
    endpoints = Path(product.env["SIYU_VAR_DIR"]) / "run" / "endpoints.yml"
    assert "${SIYU_ACTION_SECRET}" in endpoints.read_text() and secret not in endpoints.read_text()
    assert secret not in product.log.read_text(errors="replace")


@pytest.mark.parametrize("speedups", [True, False])
def test_rasa_reads_the_secret_from_its_environment_not_from_the_endpoints_file(tmp_path, monkeypatch, speedups):
    from rasa.utils.endpoints import read_endpoint_config

    from bot.launcher import write_endpoints
    from bot.settings import Settings

    monkeypatch.setenv("SIYU_ACTION_SECRET", "s3cret-from-the-environment")
    monkeypatch.setenv("SIYU_MODEL_SERVER_TOKEN", "t0ken-from-the-environment")
    for path in (write_endpoints(Settings(var_dir=tmp_path, rasa_speedups=speedups)), REPO / "bot" / "endpoints.yml"):
        assert "s3cret" not in path.read_text() and "t0ken" not in path.read_text()
        endpoint = read_endpoint_config(str(path), "action_endpoint")
        assert endpoint.headers == {"Authorization": "Bearer s3cret-from-the-environment"}, path
        models = read_endpoint_config(str(path), "models")
        if models is not None:  # the run's endpoints: Rasa pulls the active model from the console
            assert models.token == "t0ken-from-the-environment"


def test_an_action_server_started_without_a_secret_refuses_to_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SIYU_ACTION_SECRET"}
    env["SIYU_VAR_DIR"] = str(tmp_path)
    done = subprocess.run([PYTHON, "-m", "actions.server", "--port", str(free_port())], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "SIYU_ACTION_SECRET is not set" in done.stderr


async def test_while_the_action_server_is_down_customers_get_an_apology_then_normal_answers(product):
    sender = f"down{uuid.uuid4().hex[:6]}"  # a new conversation: its session starts during the outage
    mark = await kill_the_action_server(product)
    reply = await say(product, sender, "我的订单到哪了")
    assert not restarted_yet(product, mark), "the action server came back before the message was answered"
    # one apology, although the order form's validation and its question both needed the action server
    assert len(reply) == 1 and APOLOGY in reply[0]["text"], reply
    assert product.alive()
    assert "[siyu] restarting actions in" in product.log.read_text(errors="replace")[mark:]

    await wait_for_log(product, "[siyu] actions is ready again", mark)
    again = await say(product, sender, "我的订单到哪了")
    assert again and APOLOGY not in texts(again)
    assert "订单号" in texts(again)  # an anonymous visitor is asked for the order number
    # the session begun during the outage has the shop's names
    assert "小满生活馆" in texts(await say(product, sender, "你好"))


def an_order_number(product: ProductProcess) -> str:
    engine = sa.create_engine(product.database_url)
    with engine.connect() as connection:
        order_no: Optional[str] = connection.execute(sa.text("select order_no from orders limit 1")).scalar()
    engine.dispose()
    assert order_no
    return order_no


async def test_an_order_form_in_progress_goes_on_after_an_outage(product):
    sender = f"form{uuid.uuid4().hex[:6]}"
    assert "订单号" in texts(await say(product, sender, "我的订单到哪了"))
    order_no = an_order_number(product)
    mark = await kill_the_action_server(product)
    reply = await say(product, sender, order_no)
    assert not restarted_yet(product, mark), "the action server came back before the message was answered"
    assert len(reply) == 1 and APOLOGY in reply[0]["text"], reply

    await wait_for_log(product, "[siyu] actions is ready again", mark)
    # the order number sent again is taken as the answer to the form's question
    again = texts(await say(product, sender, order_no))
    assert again and APOLOGY not in again and "订单号" not in again, again
