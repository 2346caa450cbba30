"""Runs the product as one unit: prepares the database and the model, then starts and supervises
the action server, the Rasa server and, when a WeChat connector is configured, the WeChat gateway.

Child output is prefixed ([actions], [rasa]), readiness is polled before the URL is printed,
Ctrl-C / SIGTERM stop everything, and a child that dies is reported and takes the rest down
(a service manager restarts the whole product).
"""
from __future__ import annotations

import asyncio
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

    async def start(self) -> None:
        env = dict(os.environ)
        env.update(self.env)
        self.process = await asyncio.create_subprocess_exec(
            *self.argv, cwd=str(REPO_ROOT), env=env, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True)
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


def write_endpoints(settings: Settings) -> Path:
    """endpoints.yml for this run, from the settings (ports may differ from bot/endpoints.yml)."""
    endpoints = {
        "action_endpoint": {"url": f"http://{settings.host}:{settings.action_port}/webhook",
                            "enable_selective_domain": True},
        "tracker_store": {"type": "bot.stores.SiyuTrackerStore"},
        "lock_store": {"type": "bot.stores.SiyuLockStore"},
    }
    if not settings.rasa_speedups:
        # Rasa as it ships (for comparisons): its own SQL tracker store, the whole domain to every action
        endpoints["action_endpoint"] = {"url": endpoints["action_endpoint"]["url"]}
        endpoints["tracker_store"] = {"type": "sql", "url": settings.sync_database_url}
    path = Path(settings.var_dir) / "run" / "endpoints.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(endpoints, sort_keys=False), encoding="utf-8")
    return path


def child_env(settings: Settings) -> Dict[str, str]:
    env = {"PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
           "SIYU_WECHAT_RELAY_SECRET": _relay_secret(settings)}
    if settings.demo:
        env["SIYU_DEMO"] = "true"
    return env


_run_secret: Optional[str] = None


def _relay_secret(settings: Settings) -> str:
    """The secret the WeChat gateway shows the Rasa server's relay channel: the configured one, or a
    new one for this start (both children get it from here)."""
    global _run_secret
    if settings.wechat_relay_secret is not None:
        return settings.wechat_relay_secret.get_secret_value()
    if _run_secret is None:
        _run_secret = secrets.token_urlsafe(32)
    return _run_secret


def rasa_child(settings: Settings, model: Path, python: str) -> Child:
    workers = settings.workers if settings.redis_url else 1
    env = child_env(settings)
    env["SANIC_WORKERS"] = str(workers)
    entry = "bot.rasa_server" if settings.rasa_speedups else "rasa"
    argv = [python, "-m", entry, "run", "--model", str(model), "--endpoints", str(write_endpoints(settings)),
            "--credentials", str(REPO_ROOT / "bot" / "credentials.yml"), "--interface", settings.host,
            "--port", str(settings.rasa_port), "--logging-config-file", str(REPO_ROOT / "bot" / "logging.yml")]
    return Child("rasa", argv, f"http://{settings.host}:{settings.rasa_port}/webhooks/im/health", env)


def actions_child(settings: Settings, python: str) -> Child:
    return Child("actions", [python, "-m", "actions.server"],
                 f"http://{settings.host}:{settings.action_port}/health", child_env(settings))


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


async def supervise(children: List[Child], on_ready: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    exit_code = 0
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for child in children:
            say(f"starting {child.name}")
            await child.start()
            await child.wait_ready(deadline)
            say(f"{child.name} is ready")
        say(on_ready)
        waiters = {asyncio.create_task(c.process.wait()): c for c in children}
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait(list(waiters) + [stopper], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task in waiters:
                child = waiters[task]
                say(f"{child.name} stopped unexpectedly (exit code {child.process.returncode}); stopping the rest")
                exit_code = 1
        if stopper in done:
            say("stopping")
        for task in list(waiters) + [stopper]:
            task.cancel()
    except RuntimeError as exc:
        say(str(exc))
        exit_code = 1
    finally:
        for child in reversed(children):
            await child.stop()
        say("stopped")
    return exit_code
