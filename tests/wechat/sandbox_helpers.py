"""Sandbox configurations for tests: fresh random credentials, shared by the sandbox and the bot."""
from __future__ import annotations

from typing import Dict

from channels.wechat.sandbox.config import SandboxConfig, sandbox_credentials


def config_from_env(env: Dict[str, str], **overrides) -> SandboxConfig:
    return SandboxConfig.from_env(env, **{"robot_name": "AI 豆", **overrides})


def sandbox_config(**overrides) -> SandboxConfig:
    return config_from_env(sandbox_credentials(), **overrides)
