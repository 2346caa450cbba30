"""Which connectors are configured, from the SIYU_WECHAT_* settings. A connector whose settings are
incomplete is reported once at start-up with the names of the missing variables and stays off;
the others work."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from bot.settings import Settings, get_settings

logger = logging.getLogger("channels.wechat")


def _secret(value) -> Optional[str]:
    return value.get_secret_value() if value is not None else None


def _names(text: str) -> List[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


@dataclass(frozen=True)
class CallbackSecrets:
    # repr=False everywhere a secret is held: a logged config must not leak it
    token: str = field(repr=False)
    aes_key: Optional[str] = field(repr=False)  # None: plaintext mode (Official Account / mini-program only)


@dataclass(frozen=True)
class KfConfig:
    corp_id: str
    secret: str = field(repr=False)
    callback: CallbackSecrets = field(repr=False)


@dataclass(frozen=True)
class AccountConfig:
    """An Official Account or a mini-program."""

    kind: str  # mp / mini
    app_id: str
    secret: str = field(repr=False)
    callback: CallbackSecrets = field(repr=False)


@dataclass(frozen=True)
class ContactConfig:
    corp_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True)
class AppConfig:
    corp_id: str
    agent_id: int
    secret: str = field(repr=False)


@dataclass(frozen=True)
class GroupConfig:
    callback: Optional[CallbackSecrets]
    bot_names: List[str]
    prefixes: List[str]
    keywords: List[str]


@dataclass
class WeChatConfig:
    work_api_base: str
    mp_api_base: str
    kf: Optional[KfConfig] = None
    mp: Optional[AccountConfig] = None
    mini: Optional[AccountConfig] = None
    contact: Optional[ContactConfig] = None
    app: Optional[AppConfig] = None
    group: GroupConfig = field(default_factory=lambda: GroupConfig(None, [], [], []))
    callback_max_age_s: int = 300
    dedup_ttl_s: int = 86400
    api_timeout_s: float = 5.0
    outbox_max_attempts: int = 8
    outbox_poll_s: float = 0.5
    problems: Dict[str, List[str]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Optional[Settings] = None) -> "WeChatConfig":
        s = settings or get_settings()
        config = cls(work_api_base=s.wechat_work_api_base.rstrip("/"), mp_api_base=s.wechat_mp_api_base.rstrip("/"),
                     callback_max_age_s=s.wechat_callback_max_age_s, dedup_ttl_s=s.wechat_dedup_ttl_s,
                     api_timeout_s=s.wechat_api_timeout_s, outbox_max_attempts=s.wechat_outbox_max_attempts,
                     outbox_poll_s=s.wechat_outbox_poll_s)

        def complete(name: str, values: Dict[str, Optional[object]]) -> bool:
            present = {k for k, v in values.items() if v not in (None, "")}
            if present and present != set(values):
                config.problems[name] = sorted(set(values) - present)
            return present == set(values)

        corp = s.wechat_corp_id
        kf_secret = _secret(s.wechat_kf_secret)
        kf_token, kf_aes = _secret(s.wechat_kf_callback_token), _secret(s.wechat_kf_aes_key)
        if kf_secret or kf_token or kf_aes:
            if complete("wecom_kf", {"SIYU_WECHAT_CORP_ID": corp, "SIYU_WECHAT_KF_SECRET": kf_secret,
                                     "SIYU_WECHAT_KF_CALLBACK_TOKEN": kf_token, "SIYU_WECHAT_KF_AES_KEY": kf_aes}):
                config.kf = KfConfig(corp, kf_secret, CallbackSecrets(kf_token, kf_aes))
        for kind, prefix in (("mp", "MP"), ("mini", "MINI")):
            app_id = getattr(s, f"wechat_{kind}_app_id")
            secret = _secret(getattr(s, f"wechat_{kind}_app_secret"))
            token = _secret(getattr(s, f"wechat_{kind}_callback_token"))
            values = {f"SIYU_WECHAT_{prefix}_APP_ID": app_id, f"SIYU_WECHAT_{prefix}_APP_SECRET": secret,
                      f"SIYU_WECHAT_{prefix}_CALLBACK_TOKEN": token}
            if complete(kind, values) and app_id:
                aes = _secret(getattr(s, f"wechat_{kind}_aes_key")) or None
                setattr(config, kind, AccountConfig(kind, app_id, secret, CallbackSecrets(token, aes)))
        contact = _secret(s.wechat_contact_secret)
        if contact:
            if complete("mass_send", {"SIYU_WECHAT_CORP_ID": corp, "SIYU_WECHAT_CONTACT_SECRET": contact}):
                config.contact = ContactConfig(corp, contact)
        app_secret = _secret(s.wechat_app_secret)
        if app_secret or s.wechat_app_agent_id:
            if complete("app_message", {"SIYU_WECHAT_CORP_ID": corp, "SIYU_WECHAT_APP_SECRET": app_secret,
                                        "SIYU_WECHAT_APP_AGENT_ID": s.wechat_app_agent_id}):
                config.app = AppConfig(corp, int(s.wechat_app_agent_id), app_secret)
        robot_token, robot_key = _secret(s.wechat_robot_callback_token), _secret(s.wechat_robot_aes_key)
        callback = None
        if complete("wecom_group", {"SIYU_WECHAT_ROBOT_CALLBACK_TOKEN": robot_token,
                                    "SIYU_WECHAT_ROBOT_AES_KEY": robot_key}) and robot_token:
            callback = CallbackSecrets(robot_token, robot_key)
        config.group = GroupConfig(callback, _names(s.wechat_group_bot_names) or [s.shop.bot_name],
                                   _names(s.wechat_group_prefixes), _names(s.wechat_group_keywords))
        config._check_aes_keys()
        return config

    def _check_aes_keys(self) -> None:
        """A wrong EncodingAESKey would reject every callback: switch the connector off and say why."""
        from channels.wechat.inbound.crypto import CryptoConfigError, decode_aes_key

        checks = (("wecom_kf", "kf", self.kf and self.kf.callback.aes_key, "SIYU_WECHAT_KF_AES_KEY"),
                  ("mp", "mp", self.mp and self.mp.callback.aes_key, "SIYU_WECHAT_MP_AES_KEY"),
                  ("mini", "mini", self.mini and self.mini.callback.aes_key, "SIYU_WECHAT_MINI_AES_KEY"),
                  ("wecom_group", None, self.group.callback and self.group.callback.aes_key,
                   "SIYU_WECHAT_ROBOT_AES_KEY"))
        for name, attribute, key, variable in checks:
            if not key:
                continue
            try:
                decode_aes_key(key)
            except CryptoConfigError:
                self.problems[name] = [f"{variable} (not a valid 43-character EncodingAESKey)"]
                if attribute:
                    setattr(self, attribute, None)
                else:
                    self.group = GroupConfig(None, self.group.bot_names, self.group.prefixes, self.group.keywords)

    def any_configured(self) -> bool:
        return any((self.kf, self.mp, self.mini, self.group.callback, self.contact, self.app))

    def configured_names(self) -> List[str]:
        return [name for name, on in (("wecom_kf", self.kf), ("mp", self.mp), ("mini", self.mini),
                                      ("wecom_group", self.group.callback), ("mass_send", self.contact),
                                      ("app_message", self.app)) if on]

    def report(self) -> None:
        active = self.configured_names()
        logger.info("wechat connectors configured", extra={"active": active, "work_api": self.work_api_base,
                                                           "mp_api": self.mp_api_base})
        for name, missing in self.problems.items():
            logger.error("wechat connector left off: settings incomplete",
                         extra={"connector": name, "missing": missing})
