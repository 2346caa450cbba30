"""The run command's supervisor (bot/launcher.py `supervise`) with tiny child processes: a child
that dies is started again with the same environment, Ctrl-C stops everything even while a restart
is pending, and a child that keeps crashing stops the product with a clear message."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import textwrap
import time
import uuid

import aiohttp

from bot.launcher import Child, RestartPolicy, supervise
from tests.support import PYTHON, free_port

FAST = RestartPolicy(first_delay_s=0.05, max_delay_s=0.2)
SLEEPER = "import time; time.sleep(600)"
# answers GET / with the value of SIYU_TEST_SECRET from its environment
ECHO_SERVER = textwrap.dedent("""
    import http.server, os, sys

    class Echo(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = os.environ["SIYU_TEST_SECRET"].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
""")


class Output:
    """What the supervisor printed so far (pytest's capsys, accumulated)."""

    def __init__(self, capsys) -> None:
        self.capsys, self.text = capsys, ""

    def read(self) -> str:
        self.text += self.capsys.readouterr().out
        return self.text

    async def wait_for(self, line: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while line not in self.read():
            assert time.monotonic() < deadline, f"no {line!r} within {timeout_s} s in:\n{self.text}"
            await asyncio.sleep(0.05)


def echo_child(secret: str) -> Child:
    port = free_port()
    return Child("echo", [PYTHON, "-c", ECHO_SERVER, str(port)], f"http://127.0.0.1:{port}/",
                 {"SIYU_TEST_SECRET": secret})


async def get(url: str) -> str:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(url) as answer:
            assert answer.status == 200
            return await answer.text()


def alive(child: Child) -> bool:
    return child.process is not None and child.process.returncode is None


async def stop_like_ctrl_c(supervisor: asyncio.Task) -> int:
    os.kill(os.getpid(), signal.SIGINT)  # the supervisor's signal handler takes it
    return await asyncio.wait_for(supervisor, 30)


def cleanup(supervisor: asyncio.Task, *children: Child) -> None:
    supervisor.cancel()
    for child in children:
        if alive(child):
            child.kill()


async def test_a_killed_child_is_restarted_with_the_same_environment_and_ctrl_c_stops_all(capsys):
    out = Output(capsys)
    secret = uuid.uuid4().hex
    echo, sleeper = echo_child(secret), Child("sleeper", [PYTHON, "-c", SLEEPER])
    supervisor = asyncio.create_task(supervise([sleeper, echo], "all up", FAST))
    try:
        await out.wait_for("[siyu] all up")
        first_pid = echo.process.pid
        assert await get(echo.ready_url) == secret
        os.kill(first_pid, signal.SIGKILL)
        await out.wait_for("[siyu] echo is ready again")
        assert "[siyu] echo crashed (killed by SIGKILL)" in out.text
        assert "[siyu] restarting echo in 0.05 s" in out.text
        assert echo.process.pid != first_pid and alive(echo) and alive(sleeper)
        assert await get(echo.ready_url) == secret  # same environment, same secret
        assert await stop_like_ctrl_c(supervisor) == 0
        assert not alive(echo) and not alive(sleeper)
        assert out.read().rstrip().endswith("[siyu] stopped")
    finally:
        cleanup(supervisor, echo, sleeper)


async def test_ctrl_c_while_a_child_waits_for_its_restart_stops_everything(capsys):
    out = Output(capsys)
    echo, sleeper = echo_child("x"), Child("sleeper", [PYTHON, "-c", SLEEPER])
    supervisor = asyncio.create_task(supervise([sleeper, echo], "all up", RestartPolicy(first_delay_s=60)))
    try:
        await out.wait_for("[siyu] all up")
        os.kill(echo.process.pid, signal.SIGKILL)
        await out.wait_for("[siyu] restarting echo in 60 s")
        assert await stop_like_ctrl_c(supervisor) == 0
        assert not alive(echo) and not alive(sleeper)
        assert "echo is ready again" not in out.read()
    finally:
        cleanup(supervisor, echo, sleeper)


async def test_a_child_that_keeps_crashing_stops_the_product_with_a_clear_message(capsys):
    out = Output(capsys)
    crashing = Child("crashy", [PYTHON, "-c", "import sys, time; time.sleep(0.2); sys.exit(3)"])
    sleeper = Child("sleeper", [PYTHON, "-c", SLEEPER])
    supervisor = asyncio.create_task(supervise([sleeper, crashing], "all up", FAST))
    try:
        assert await asyncio.wait_for(supervisor, 60) == 1
        text = out.read()
        assert "[siyu] crashy crashed 5 times in 5 minutes; stopping" in text
        assert text.count("[siyu] crashy crashed (exit code 3)") == 5
        # the pause doubles from first_delay_s up to max_delay_s
        assert re.findall(r"restarting crashy in ([\d.]+) s", text) == ["0.05", "0.1", "0.2", "0.2"]
        assert not alive(sleeper) and text.rstrip().endswith("[siyu] stopped")
    finally:
        cleanup(supervisor, crashing, sleeper)


async def test_the_pause_starts_over_after_a_child_stayed_up_a_while(capsys):
    out = Output(capsys)
    # stays up longer than stable_after_s each time
    crashing = Child("crashy", [PYTHON, "-c", "import sys, time; time.sleep(1.0); sys.exit(1)"])
    policy = RestartPolicy(first_delay_s=0.05, max_delay_s=5, stable_after_s=0.5, max_crashes=3)
    supervisor = asyncio.create_task(supervise([crashing], "all up", policy))
    try:
        assert await asyncio.wait_for(supervisor, 60) == 1
        text = out.read()
        assert re.findall(r"restarting crashy in ([\d.]+) s", text) == ["0.05", "0.05"]
        assert "[siyu] crashy crashed 3 times in 5 minutes; stopping" in text
    finally:
        cleanup(supervisor, crashing)
