"""What the sandbox platform knows about the shop: the same ids and secrets the connectors use (read
from the SIYU_WECHAT_* settings, so both sides always agree), plus the rules it enforces."""
from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field, fields
from typing import Dict, List, Optional

from bot.settings import Settings, get_settings

# the connectors' webhook paths on the WeChat gateway (channels/wechat/inbound/connectors.py, gateway.py)
CALLBACK_PATHS = {
    "kf": "/webhooks/wecom_kf/webhook",
    "mp": "/webhooks/wechat_mp/webhook",
    "mini": "/webhooks/wechat_mini/webhook",
    "group": "/webhooks/wecom_group/webhook",
}


def random_aes_key() -> str:
    """A fresh EncodingAESKey (43 characters), as the platform's settings page generates."""
    return base64.b64encode(secrets.token_bytes(32)).decode()[:43]


def sandbox_credentials() -> Dict[str, str]:
    """Environment for a bot + sandbox pair: fresh, random credentials used nowhere else."""
    return {
        "SIYU_WECHAT_CORP_ID": "wwsandbox" + secrets.token_hex(4),
        "SIYU_WECHAT_KF_SECRET": secrets.token_urlsafe(24),
        "SIYU_WECHAT_KF_CALLBACK_TOKEN": secrets.token_urlsafe(12),
        "SIYU_WECHAT_KF_AES_KEY": random_aes_key(),
        "SIYU_WECHAT_CONTACT_SECRET": secrets.token_urlsafe(24),
        "SIYU_WECHAT_APP_AGENT_ID": "1000002",
        "SIYU_WECHAT_APP_SECRET": secrets.token_urlsafe(24),
        "SIYU_WECHAT_ROBOT_CALLBACK_TOKEN": secrets.token_urlsafe(12),
        "SIYU_WECHAT_ROBOT_AES_KEY": random_aes_key(),
        "SIYU_WECHAT_MP_APP_ID": "wxsandboxmp" + secrets.token_hex(4),
        "SIYU_WECHAT_MP_APP_SECRET": secrets.token_hex(16),
        "SIYU_WECHAT_MP_CALLBACK_TOKEN": secrets.token_urlsafe(12),
        "SIYU_WECHAT_MP_AES_KEY": random_aes_key(),
        "SIYU_WECHAT_MINI_APP_ID": "wxsandboxmini" + secrets.token_hex(4),
        "SIYU_WECHAT_MINI_APP_SECRET": secrets.token_hex(16),
        "SIYU_WECHAT_MINI_CALLBACK_TOKEN": secrets.token_urlsafe(12),
        "SIYU_WECHAT_MINI_AES_KEY": random_aes_key(),
    }


def sandbox_environment(settings: Settings) -> Dict[str, str]:
    """Environment that points the connectors at a local sandbox (for `python -m bot run --sandbox`)."""
    env = sandbox_credentials()
    base = f"http://127.0.0.1:{settings.wechat_sandbox_port}"
    env.update({"SIYU_WECHAT_WORK_API_BASE": base, "SIYU_WECHAT_MP_API_BASE": base})
    return env


def _secret(value) -> str:
    return value.get_secret_value() if value is not None else ""


@dataclass
class SandboxConfig:
    corp_id: str = "wwsandbox"
    kf_secret: str = ""
    kf_token: str = ""
    kf_aes_key: str = ""
    contact_secret: str = ""
    app_agent_id: int = 1000002
    app_secret: str = ""
    robot_token: str = ""
    robot_aes_key: str = ""
    mp_app_id: str = ""
    mp_secret: str = ""
    mp_token: str = ""
    mp_aes_key: str = ""  # empty: plaintext mode
    mini_app_id: str = ""
    mini_secret: str = ""
    mini_token: str = ""
    mini_aes_key: str = ""
    mini_format: str = "json"  # the data format chosen in the mini-program's message push settings
    robot_name: str = "AI 豆"
    open_kfid: str = "wkSandboxKf000001"
    mp_original_id: str = "gh_sandbox_mp0001"
    mini_original_id: str = "gh_sandbox_mini01"
    # where the bot listens (callbacks go to bot_url + CALLBACK_PATHS[channel]); None: no callbacks
    bot_url: Optional[str] = None
    # --- rules ----------------------------------------------------------------------------------
    token_ttl_s: int = 7200
    # Official Account: a new token invalidates the previous one after this grace period
    mp_token_overlap_s: int = 300
    kf_msg_token_ttl_s: int = 600
    window_s: int = 48 * 3600
    window_quota: int = 5
    event_window_s: int = 60
    mp_event_quota: int = 3
    mini_enter_quota: int = 2
    robot_per_minute: int = 20
    app_per_member_minute: int = 30
    app_per_member_hour: int = 1000
    text_limit_bytes: int = 2048
    markdown_limit_bytes: int = 4096
    # calls per API per minute before 45009 (0: unlimited)
    api_limit_per_minute: int = 0
    callback_timeout_s: float = 5.0
    callback_retries: int = 3
    callback_retry_delay_s: float = 0.0
    staff: List[str] = field(default_factory=lambda: ["owner01", "owner02", "staff01"])

    @classmethod
    def from_env(cls, env: Dict[str, str], **overrides) -> "SandboxConfig":
        """The sandbox for a bot started with these SIYU_WECHAT_* variables (tests, benchmarks)."""
        values = dict(
            corp_id=env["SIYU_WECHAT_CORP_ID"], kf_secret=env["SIYU_WECHAT_KF_SECRET"],
            kf_token=env["SIYU_WECHAT_KF_CALLBACK_TOKEN"], kf_aes_key=env["SIYU_WECHAT_KF_AES_KEY"],
            contact_secret=env["SIYU_WECHAT_CONTACT_SECRET"], app_agent_id=int(env["SIYU_WECHAT_APP_AGENT_ID"]),
            app_secret=env["SIYU_WECHAT_APP_SECRET"], robot_token=env["SIYU_WECHAT_ROBOT_CALLBACK_TOKEN"],
            robot_aes_key=env["SIYU_WECHAT_ROBOT_AES_KEY"], mp_app_id=env["SIYU_WECHAT_MP_APP_ID"],
            mp_secret=env["SIYU_WECHAT_MP_APP_SECRET"], mp_token=env["SIYU_WECHAT_MP_CALLBACK_TOKEN"],
            mp_aes_key=env.get("SIYU_WECHAT_MP_AES_KEY", ""), mini_app_id=env["SIYU_WECHAT_MINI_APP_ID"],
            mini_secret=env["SIYU_WECHAT_MINI_APP_SECRET"], mini_token=env["SIYU_WECHAT_MINI_CALLBACK_TOKEN"],
            mini_aes_key=env.get("SIYU_WECHAT_MINI_AES_KEY", ""))
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None, **overrides) -> "SandboxConfig":
        s = settings or get_settings()
        values = dict(
            corp_id=s.wechat_corp_id or "wwsandbox",
            kf_secret=_secret(s.wechat_kf_secret), kf_token=_secret(s.wechat_kf_callback_token),
            kf_aes_key=_secret(s.wechat_kf_aes_key), contact_secret=_secret(s.wechat_contact_secret),
            app_agent_id=s.wechat_app_agent_id or 1000002, app_secret=_secret(s.wechat_app_secret),
            robot_token=_secret(s.wechat_robot_callback_token), robot_aes_key=_secret(s.wechat_robot_aes_key),
            mp_app_id=s.wechat_mp_app_id or "", mp_secret=_secret(s.wechat_mp_app_secret),
            mp_token=_secret(s.wechat_mp_callback_token), mp_aes_key=_secret(s.wechat_mp_aes_key),
            mini_app_id=s.wechat_mini_app_id or "", mini_secret=_secret(s.wechat_mini_app_secret),
            mini_token=_secret(s.wechat_mini_callback_token), mini_aes_key=_secret(s.wechat_mini_aes_key),
            robot_name=(s.wechat_group_bot_names.split(",")[0].strip() if s.wechat_group_bot_names
                        else s.shop.bot_name),
        )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown sandbox options: {sorted(unknown)}")
        values.update(overrides)
        return cls(**values)
