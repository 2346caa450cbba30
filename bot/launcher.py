"""Runs the product as one unit: prepares the database and the model, then starts and supervises
the action server, the Rasa server and, when a WeChat connector is configured, the WeChat gateway.

Child output is prefixed ([actions], [rasa]), readiness is polled before the URL is printed, and
Ctrl-C / SIGTERM stop everything. A child that fails to start stops the product at once (that is a
configuration problem); a child that dies later is started again after a growing pause, and only a
child that keeps crashing stops the product (then a service manager may restart the whole of it).
"""
from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import aiohttp
import yaml
from pydantic import SecretStr

from bot.settings import REPO_ROOT, Settings

STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 300.0


def say(message: str) -> None:
    print(f"[siyu] {message}", flush=True)


@dataclass
class Child:
    name: str
    argv: List[str]
    ready_url: Optional[str] = None
    env: Dict[str, str] = field(default_factory=dict)
    process: Optional[asyncio.subprocess.Process] = None
    pump: Optional[asyncio.Task] = None
    started_at: float = 0.0

    async def start(self) -> None:
        """Starts the child (again, after a crash: with the same environment and secrets)."""
        env = dict(os.environ)
        env.update(self.env)
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, cwd=str(REPO_ROOT), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        self.started_at = time.monotonic()
        self.pump = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self.process and self.process.stdout
        prefix = f"[{self.name}] "
        while True:
            line = await self.process.stdout.readline()
            if not line:
                break
            sys.stdout.write(prefix + line.decode("utf-8", "replace").rstrip("\n") + "\n")
            sys.stdout.flush()

    async def wait_ready(self, deadline: float) -> None:
        if self.ready_url is None:  # nothing to ask: started is ready
            return
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while time.monotonic() < deadline:
                if self.process and self.process.returncode is not None:
                    raise RuntimeError(f"{self.name} exited with code {self.process.returncode} while starting")
                try:
                    async with session.get(self.ready_url) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                await asyncio.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s")

    def kill(self) -> None:
        """SIGKILL to the child's process group: also what a dead child left behind (forked workers
        still holding its port)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def stop(self) -> None:
        if not self.process or self.process.returncode is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            await asyncio.wait_for(self.process.wait(), STOP_GRACE_S)
        except asyncio.TimeoutError:
            os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()
        except ProcessLookupError:
            pass
        if self.pump:
            await asyncio.gather(self.pump, return_exceptions=True)


# Rasa reads the action server's secret from its environment when it loads endpoints.yml, so the
# secret itself is never written to disk
ACTION_SECRET_HEADER = {"Authorization": "Bearer ${SIYU_ACTION_SECRET}"}
# how often each Rasa worker asks the console whether another model was switched in
MODEL_PULL_S = 10


def write_endpoints(settings: Settings) -> Path:
    """endpoints.yml for this run, from the settings (ports may differ from bot/endpoints.yml)."""
    url = f"http://{settings.host}:{settings.action_port}/webhook"
    endpoints = {
        "action_endpoint": {"url": url, "headers": ACTION_SECRET_HEADER, "enable_selective_domain": True},
        "tracker_store": {"type": "bot.stores.SiyuTrackerStore"},
        "lock_store": {"type": "bot.stores.SiyuLockStore"},
        # the model a supervisor switched in from the console (desk/training.py), pulled by Rasa
        "models": {"url": f"http://{settings.local_host}:{settings.console_port}/models/current",
                   "token": "${SIYU_MODEL_SERVER_TOKEN}", "wait_time_between_pulls": MODEL_PULL_S},
    }
    if not settings.rasa_speedups:
        # Rasa as it ships (for comparisons): its own SQL tracker store, the whole domain to every action
        endpoints["action_endpoint"] = {"url": url, "headers": ACTION_SECRET_HEADER}
        endpoints["tracker_store"] = {"type": "sql", "url": settings.sync_database_url}
    path = Path(settings.var_dir) / "run" / "endpoints.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(endpoints, sort_keys=False), encoding="utf-8")
    return path


def child_env(settings: Settings) -> Dict[str, str]:
    env = {"PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "SIYU_WECHAT_RELAY_SECRET": _run_secret(settings.wechat_relay_secret, "relay"),
           "SIYU_DESK_BRIDGE_SECRET": _run_secret(settings.desk_bridge_secret, "desk_bridge")}
    if settings.demo:
        env["SIYU_DEMO"] = "true"
    return env


_run_secrets: Dict[str, str] = {}


def _run_secret(configured: Optional[SecretStr], name: str, fernet: bool = False) -> str:
    """A secret two children share: the configured one, or a new one made once for this start
    (every child, and every restart of it, gets the same from here). `relay`: the WeChat gateway
    shows it to the Rasa server's relay channel; `action`: the Rasa server shows it to the action
    server; `desk_bridge`: the console shows it to the Rasa server; `console`: the console's cookie
    key (`fernet`: 32 url-safe base64 bytes)."""
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    if name not in _run_secrets:
        _run_secrets[name] = (base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() if fernet
                              else secrets.token_urlsafe(32))
    return _run_secrets[name]


def rasa_child(settings: Settings, model: Path, python: str) -> Child:
    workers = settings.workers if settings.redis_url else 1
    env = child_env(settings)
    env["SANIC_WORKERS"] = str(workers)
    env["SIYU_ACTION_SECRET"] = _run_secret(settings.action_secret, "action")
    env["SIYU_MODEL_SERVER_TOKEN"] = _run_secret(None, "model_server")
    # bot.rasa_server also with rasa_speedups off: it installs the speed-ups only when they are on, and
    # always the reply customers get while the action server is down
    argv = [python, "-m", "bot.rasa_server", "run", "--model", str(model), "--endpoints",
            str(write_endpoints(settings)), "--credentials", str(settings.rasa_credentials_file),
            "--interface", settings.host, "--port", str(settings.rasa_port),
            "--logging-config-file", str(REPO_ROOT / "bot" / "logging.yml")]
    return Child("rasa", argv, f"http://{settings.host}:{settings.rasa_port}/webhooks/im/health", env)


def actions_child(settings: Settings, python: str) -> Child:
    env = child_env(settings)
    env["SIYU_ACTION_SECRET"] = _run_secret(settings.action_secret, "action")
    return Child("actions", [python, "-m", "actions.server"], f"http://{settings.host}:{settings.action_port}/health",
                 env)


def console_child(settings: Settings, python: str, model: Path) -> Child:
    """The support console (console/): staff pages and JSON API on SIYU_CONSOLE_PORT, and the model
    server the Rasa server pulls its model from (started before it)."""
    env = child_env(settings)
    env["SIYU_CONSOLE_SECRET"] = _run_secret(settings.console_secret, "console", fernet=True)
    env["SIYU_MODEL_SERVER_TOKEN"] = _run_secret(None, "model_server")
    env["SIYU_ACTIVE_MODEL"] = str(model)
    return Child("console", [python, "-m", "console"], f"http://{settings.local_host}:{settings.console_port}/health",
                 env)


def sop_scheduler_child(settings: Settings, python: str) -> Child:
    """The community SOP scheduler (community_sop/scheduler.py): one leads, others wait."""
    return Child("sop", [python, "-m", "community_sop.scheduler"], None, child_env(settings))


# --- WeChat (channels/wechat, issue 3) ----------------------------------------------------------------
def wechat_gateway_child(settings: Settings, python: str) -> Child:
    """Where the platform's callbacks arrive and replies leave; it asks the Rasa server for answers."""
    return Child("wechat", [python, "-m", "channels.wechat.gateway"],
                 f"http://{settings.local_host}:{settings.wechat_port}/health", child_env(settings))


def wechat_sandbox_child(settings: Settings, python: str) -> Child:
    """The fake WeChat platform (`run --sandbox`): serves the APIs the connectors call and delivers
    signed callbacks to the gateway."""
    port = settings.wechat_sandbox_port
    argv = [python, "-m", "channels.wechat.sandbox", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--bot-url", f"http://{settings.local_host}:{settings.wechat_port}"]
    return Child("wechat-sandbox", argv, f"http://127.0.0.1:{port}/sandbox/health", child_env(settings))
# --- end WeChat ----------------------------------------------------------------------


@dataclass(frozen=True)
class RestartPolicy:
    """How crashed children are started again: after first_delay_s, doubling up to max_delay_s; a
    child that stayed up stable_after_s starts over at first_delay_s; max_crashes of one child within
    window_s stop the product (a child that cannot stay up is not helped by more restarts)."""

    first_delay_s: float = 1.0
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    max_crashes: int = 5
    window_s: float = 300.0


class GaveUp(RuntimeError):
    """A child crashed too often: the product stops."""


async def _exited(process: asyncio.subprocess.Process) -> int:
    """The process's exit code once it has exited. (Process.wait() also waits for its output pipe
    to close, which workers it forked keep open after it was killed.)"""
    while process.returncode is None:
        await asyncio.sleep(0.2)
    return process.returncode


def _exit_reason(code: int) -> str:
    return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


async def _report_ready(child: Child) -> None:
    """Waits in the background for a restarted child to answer on its ready_url; one that stays
    alive without ever answering is killed, so that it is restarted like a crashed one."""
    try:
        await child.wait_ready(time.monotonic() + READY_TIMEOUT_S)
        say(f"{child.name} is ready again")
    except RuntimeError as exc:
        if child.process.returncode is None:
            say(f"{exc}; killing it")
            child.kill()


async def _keep_running(child: Child, policy: RestartPolicy) -> None:
    """Restarts `child` each time it dies, after a growing pause; raises GaveUp when it crashed
    policy.max_crashes times within policy.window_s. Runs until cancelled."""
    crashes: List[float] = []
    delay = policy.first_delay_s
    readiness: Optional[asyncio.Task] = None
    try:
        while True:
            code = await _exited(child.process)
            child.kill()  # what it may have left behind
            now = time.monotonic()
            say(f"{child.name} crashed ({_exit_reason(code)})")
            crashes = [t for t in crashes if now - t < policy.window_s] + [now]
            if len(crashes) >= policy.max_crashes:
                raise GaveUp(f"{child.name} crashed {len(crashes)} times in {policy.window_s / 60:g} minutes; "
                             "stopping")
            if now - child.started_at >= policy.stable_after_s:
                delay = policy.first_delay_s
            say(f"restarting {child.name} in {delay:g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, policy.max_delay_s)
            if readiness:
                readiness.cancel()
            await child.start()
            readiness = asyncio.create_task(_report_ready(child))
    finally:
        if readiness:
            readiness.cancel()


async def _start_and_keep_running(children: List[Child], on_ready: str, policy: RestartPolicy) -> None:
    """Starts the children one after the other, each once the previous is ready, then keeps them
    running until one of them crashed too often (GaveUp) or this is cancelled."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for child in children:
        say(f"starting {child.name}")
        await child.start()
        await child.wait_ready(deadline)
        say(f"{child.name} is ready")
    say(on_ready)
    keepers = [asyncio.create_task(_keep_running(child, policy)) for child in children]
    try:
        done, _ = await asyncio.wait(keepers, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in keepers:
            task.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)


async def supervise(children: List[Child], on_ready: str, policy: RestartPolicy = RestartPolicy()) -> int:
    """Runs the children until Ctrl-C / SIGTERM (exit code 0), or until one fails to start or
    crashes too often (1); every child is stopped before this returns."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(_start_and_keep_running(children, on_ready, policy))
    stopper = asyncio.create_task(stop.wait())
    exit_code = 0
    try:
        await asyncio.wait([running, stopper], return_when=asyncio.FIRST_COMPLETED)
        if stopper.done():
            say("stopping")
        else:
            running.result()
    except RuntimeError as exc:  # a child did not start, or crashed too often (GaveUp)
        say(str(exc))
        exit_code = 1
    finally:
        for task in (running, stopper):
            task.cancel()
        await asyncio.gather(running, stopper, return_exceptions=True)
        for child in reversed(children):
            await child.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        say("stopped")
    return exit_code
