"""Sandbox configurations for tests: fresh random credentials, shared by the sandbox and the bot."""
from __future__ import annotations

from typing import Dict

from channels.wechat.sandbox.config import SandboxConfig, sandbox_credentials


def config_from_env(env: Dict[str, str], **overrides) -> SandboxConfig:
    values = dict(
        corp_id=env["SIYU_WECHAT_CORP_ID"], kf_secret=env["SIYU_WECHAT_KF_SECRET"],
        kf_token=env["SIYU_WECHAT_KF_CALLBACK_TOKEN"], kf_aes_key=env["SIYU_WECHAT_KF_AES_KEY"],
        contact_secret=env["SIYU_WECHAT_CONTACT_SECRET"], app_agent_id=int(env["SIYU_WECHAT_APP_AGENT_ID"]),
        app_secret=env["SIYU_WECHAT_APP_SECRET"], robot_token=env["SIYU_WECHAT_ROBOT_CALLBACK_TOKEN"],
        robot_aes_key=env["SIYU_WECHAT_ROBOT_AES_KEY"], mp_app_id=env["SIYU_WECHAT_MP_APP_ID"],
        mp_secret=env["SIYU_WECHAT_MP_APP_SECRET"], mp_token=env["SIYU_WECHAT_MP_CALLBACK_TOKEN"],
        mp_aes_key=env.get("SIYU_WECHAT_MP_AES_KEY", ""), mini_app_id=env["SIYU_WECHAT_MINI_APP_ID"],
        mini_secret=env["SIYU_WECHAT_MINI_APP_SECRET"], mini_token=env["SIYU_WECHAT_MINI_CALLBACK_TOKEN"],
        mini_aes_key=env.get("SIYU_WECHAT_MINI_AES_KEY", ""), robot_name="AI 豆")
    values.update(overrides)
    return SandboxConfig(**values)


def sandbox_config(**overrides) -> SandboxConfig:
    return config_from_env(sandbox_credentials(), **overrides)
