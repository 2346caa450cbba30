"""The one typed settings object of the product.

Infrastructure comes from environment variables (``DATABASE_URL``, ``REDIS_URL``, ``SIYU_*``);
the shop itself (name, persona, policies...) from the shop YAML file that an operator edits.
Secrets are ``SecretStr`` so they never end up in logs or reprs.
"""
from __future__ import annotations

import functools
import os
from datetime import time
from pathlib import Path
from typing import Dict, List, Literal, Optional

import yaml
from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHOP_FILE = REPO_ROOT / "bot" / "shop.yml"

Persona = Literal["专业顾问", "热情闺蜜", "幽默风趣"]


class BusinessHours(BaseModel):
    start: time = time(9, 0)
    end: time = time(22, 0)
    # ISO weekdays, 1 = Monday
    days: List[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])


class PolicyTopic(BaseModel):
    """One configured answer, chosen when the message contains one of its keywords."""

    keywords: List[str] = Field(default_factory=list)
    answer: str


class PolicyAnswers(BaseModel):
    default: str
    topics: List[PolicyTopic] = Field(default_factory=list)

    def answer_for(self, text: str) -> str:
        for topic in self.topics:
            if any(k in text for k in topic.keywords):
                return topic.answer
        return self.default


class CheckinRules(BaseModel):
    points_per_day: int = 5
    streak_bonus_days: int = 7
    streak_bonus_points: int = 20
    # in customer groups, a member's message that is one of these words (alone, or @-addressed to
    # the bot) checks them in
    words: List[str] = Field(default_factory=lambda: ["签到", "打卡"])


class VerificationRules(BaseModel):
    """How an anonymous visitor proves an order (its receiver phone's last 4 digits), and the limits
    that make guessing them useless (actions/order_verification.py)."""

    # wrong answers for one order number, from every conversation and channel together, within
    # order_window_hours: then the order is locked until its owner or staff lift the lock
    max_failures_per_order: int = Field(5, ge=1, le=50)
    order_window_hours: int = Field(24, ge=1)
    # wrong answers from one client address (web IM) over all orders: then refused for the window
    max_failures_per_client: int = Field(10, ge=1, le=1000)
    client_window_minutes: int = Field(60, ge=1)
    # wrong answers in one conversation session
    max_failures_per_conversation: int = Field(3, ge=1, le=50)
    # how long a proof counts, in the conversation that gave it: cancelling, changing the address
    # or an after-sales request need a recent one; seeing the status one from this session
    fresh_minutes_for_changes: int = Field(10, ge=1)
    fresh_minutes_for_status: int = Field(120, ge=1)


class OrderRules(BaseModel):
    cancellable_statuses: List[str] = Field(default_factory=lambda: ["pending_payment", "paid"])
    address_changeable_statuses: List[str] = Field(default_factory=lambda: ["pending_payment", "paid"])
    # after-sales requests are accepted within return_window_days of delivery
    returnable_statuses: List[str] = Field(default_factory=lambda: ["delivered", "completed"])
    verification: VerificationRules = Field(default_factory=VerificationRules)


class ServiceTargets(BaseModel):
    """SLA targets of the desk, in business minutes."""

    first_response_minutes: int = Field(3, ge=1)
    next_response_minutes: int = Field(5, ge=1)
    resolution_minutes: int = Field(120, ge=1)


class DeskRules(BaseModel):
    """When the assistant hands a conversation to staff, and how the wait is announced (desk/)."""

    # customers of these levels are handed on at the first misunderstanding and rank higher
    vip_levels: List[str] = Field(default_factory=lambda: ["金卡会员", "黑卡会员"])
    # a refund request above this amount (yuan) goes to a person
    refund_handoff_above_yuan: int = Field(500, ge=0)
    # minutes one waiting customer adds to the announced wait, per online agent
    minutes_per_customer: int = Field(3, ge=1)
    targets: ServiceTargets = Field(default_factory=ServiceTargets)


class Cap(BaseModel):
    """At most this many nudges per customer per calendar day / week (the customer's days)."""

    day: int = Field(ge=0)
    week: int = Field(ge=0)


class NudgeCaps(BaseModel):
    """Frequency caps: over every nudge, and per category (transactional: logistics, refunds;
    marketing: carts, lifecycle, promotions)."""

    all: Cap = Field(default_factory=lambda: Cap(day=3, week=8))
    marketing: Cap = Field(default_factory=lambda: Cap(day=1, week=3))
    transactional: Cap = Field(default_factory=lambda: Cap(day=3, week=10))


class RfmThresholds(BaseModel):
    """Where "high" starts for the 8-type RFM split; None: the shop's own median (recomputed daily)."""

    recency_days: Optional[int] = Field(None, ge=0)
    frequency: Optional[int] = Field(None, ge=1)
    monetary_yuan: Optional[int] = Field(None, ge=0)


class NudgeRules(BaseModel):
    """Guardrails every nudge passes at send time, and the defaults of the shop's rules (nudges/)."""

    # no marketing nudge inside these hours (the shop's time); a rule holds it until the end or drops it
    quiet_start: str = Field("21:00", pattern=r"^\d{2}:\d{2}$")
    quiet_end: str = Field("09:00", pattern=r"^\d{2}:\d{2}$")
    caps: NudgeCaps = Field(default_factory=NudgeCaps)
    # a rule's control group when the rule does not say (receives nothing; "would have sent")
    holdout_share: float = Field(0.1, ge=0, le=0.5)
    # an order paid within this many days of a nudge counts as its conversion
    attribution_days: int = Field(7, ge=1, le=90)
    rfm: RfmThresholds = Field(default_factory=RfmThresholds)
    # customer numbers never held out (staff's own accounts, to see what customers get)
    test_customers: List[str] = Field(default_factory=list)
    # days a product lasts, per category, when its specs carry no 使用周期 (replenishment reminders)
    use_cycle_days: Dict[str, int] = Field(default_factory=dict)


class ShopConfig(BaseModel):
    name: str = "小满生活馆"
    bot_name: str = "AI 豆"
    persona: Persona = "专业顾问"
    timezone: str = "Asia/Shanghai"
    # the shop's own web domains (store, mini-program pages): links to them in groups are not ads
    own_domains: List[str] = Field(default_factory=list)
    return_window_days: int = Field(7, ge=0, le=365)
    business_hours: BusinessHours = Field(default_factory=BusinessHours)
    service_phone: str = ""
    # where customers send returned goods
    return_address: str = ""
    # hours within which a complaint or a request for a person is answered by staff
    staff_response_hours: int = 24
    # a paid order is shipped within this many hours (used to tell the customer when to expect it)
    ship_within_hours: int = 48
    # an unpaid order is closed after this many minutes
    unpaid_close_minutes: int = 30
    # a parcel whose tracking has not moved for this many hours is reported as stalled
    logistics_stall_hours: int = 48
    policies: Dict[str, PolicyAnswers] = Field(default_factory=dict)
    checkin: CheckinRules = Field(default_factory=CheckinRules)
    orders: OrderRules = Field(default_factory=OrderRules)
    desk: DeskRules = Field(default_factory=DeskRules)
    nudges: NudgeRules = Field(default_factory=NudgeRules)

    @field_validator("policies")
    @classmethod
    def _required_policies(cls, value: Dict[str, PolicyAnswers]) -> Dict[str, PolicyAnswers]:
        missing = {"invoice", "payment", "shipping"} - set(value)
        if missing:
            raise ValueError(f"shop config lacks policy answers for: {sorted(missing)}")
        return value


def load_shop_config(path: Path) -> ShopConfig:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    return ShopConfig.model_validate(data.get("shop", data))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIYU_", extra="ignore")

    # --- storage -------------------------------------------------------------------------
    database_url: str = Field(
        default=f"sqlite:///{REPO_ROOT / 'var' / 'siyu.db'}",
        validation_alias="DATABASE_URL",
    )
    redis_url: Optional[str] = Field(default=None, validation_alias="REDIS_URL")

    # --- processes -----------------------------------------------------------------------
    host: str = "127.0.0.1"
    rasa_port: int = 5005
    action_port: int = 5055
    # >1 only takes effect with Redis (the lock store must be shared between workers)
    workers: int = 1
    model_dir: Path = REPO_ROOT / "models"
    # the channels the Rasa server opens (docs/SECURITY.md before adding Rasa's `rest:` to it)
    rasa_credentials_file: Path = REPO_ROOT / "bot" / "credentials.yml"
    var_dir: Path = REPO_ROOT / "var"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"
    # the action server answers only requests that carry this secret (Authorization: Bearer ...);
    # `python -m bot run` makes one per start when unset, an action server started alone needs it
    action_secret: Optional[SecretStr] = None
    # false runs Rasa exactly as it ships (no bot/rasa_server.py fixes, Rasa's own SQL tracker store):
    # only for measuring what the fixes bring (bench/e2e_bench.py)
    rasa_speedups: bool = True

    # --- behaviour -----------------------------------------------------------------------
    demo: bool = False
    shop_file: Path = DEFAULT_SHOP_FILE
    # every I/O call an action makes is bounded by this many seconds
    action_io_timeout: float = 3.0
    # the Rasa server gives up on an action (or a form's round of actions) after this many seconds
    # and apologises to the customer (a hung action server); the actions' own budget is 3 I/O timeouts
    action_call_timeout_s: float = Field(30.0, gt=0)
    # web IM: a client must sign its sender id (HMAC-SHA256, hex) to be trusted as that customer;
    # unset: every sender is an anonymous visitor (the demo makes one per run for its demo customers)
    im_identity_secret: Optional[SecretStr] = None
    # web IM behind a reverse proxy: the header it puts the client's address in (e.g. X-Real-IP);
    # unset: the connection's peer address. Used to limit order-verification guesses per client
    im_client_ip_header: Optional[str] = None
    # web IM: turns of one conversation handled at once; more get 429 with Retry-After
    im_max_pending_per_conversation: int = Field(5, ge=1, le=100)
    # web IM: when set, replies are also POSTed here (push mode)
    im_callback_url: Optional[str] = None
    im_max_message_chars: int = 2000

    # --- knowledge base (knowledge/, issue 4) -------------------------------------------------
    # the published index the action server reads (python -m knowledge import / build write it);
    # default: <var_dir>/knowledge/index
    knowledge_index_dir: Optional[Path] = None
    # how often, at most, a running bot checks whether a new index was published
    knowledge_refresh_seconds: float = 3.0
    # sentence vectors: "auto" = USE multilingual if its wheel is installed, else LSA; or use / lsa / none
    knowledge_dense_model: Literal["auto", "use", "lsa", "none"] = "auto"
    # --- end knowledge base --------------------------------------------------------------------

    # --- WeChat (channels/wechat, issue 3; setup guide: docs/WECHAT_SETUP.md) --------------------
    # A connector is active when its ids and secrets are set; all come from SIYU_WECHAT_* variables.
    # API hosts: `python -m bot run --sandbox` points both at the local platform sandbox.
    wechat_work_api_base: str = "https://qyapi.weixin.qq.com"
    wechat_mp_api_base: str = "https://api.weixin.qq.com"
    # WeCom (企业微信) corp id, shared by 微信客服, customer contact, the self-built app and robots
    wechat_corp_id: Optional[str] = None
    # 微信客服: its API secret, and the callback Token / EncodingAESKey of its 回调配置
    wechat_kf_secret: Optional[SecretStr] = None
    wechat_kf_callback_token: Optional[SecretStr] = None
    wechat_kf_aes_key: Optional[SecretStr] = None
    # 客户联系 secret: mass-send tasks to customer groups (externalcontact/add_msg_template)
    wechat_contact_secret: Optional[SecretStr] = None
    # self-built app (自建应用): app messages to staff (group owners, escalations)
    wechat_app_agent_id: Optional[int] = None
    wechat_app_secret: Optional[SecretStr] = None
    # group robot message callback (群机器人 接收消息): Token / EncodingAESKey of the robot's callback
    wechat_robot_callback_token: Optional[SecretStr] = None
    wechat_robot_aes_key: Optional[SecretStr] = None
    # how a group member addresses the bot (comma separated); the @-name defaults to the shop's bot_name
    wechat_group_bot_names: str = ""
    wechat_group_prefixes: str = ""
    wechat_group_keywords: str = ""
    # Official Account (公众号): app id / secret, callback Token, EncodingAESKey (unset = plaintext mode)
    wechat_mp_app_id: Optional[str] = None
    wechat_mp_app_secret: Optional[SecretStr] = None
    wechat_mp_callback_token: Optional[SecretStr] = None
    wechat_mp_aes_key: Optional[SecretStr] = None
    # mini-program (小程序) customer service: same four as the Official Account
    wechat_mini_app_id: Optional[str] = None
    wechat_mini_app_secret: Optional[SecretStr] = None
    wechat_mini_callback_token: Optional[SecretStr] = None
    wechat_mini_aes_key: Optional[SecretStr] = None
    # callbacks older or newer than this many seconds are rejected as stale (replay protection)
    wechat_callback_max_age_s: int = Field(300, ge=30, le=3600)
    # platform retries arrive within seconds; a dedup key is kept this long
    wechat_dedup_ttl_s: int = Field(86400, ge=600)
    # every platform API call is bounded by this many seconds
    wechat_api_timeout_s: float = Field(5.0, gt=0)
    # outbox: attempts before a message is marked failed for staff, and the idle poll interval
    wechat_outbox_max_attempts: int = Field(8, ge=1, le=50)
    wechat_outbox_poll_s: float = Field(0.5, gt=0)
    # port of the platform sandbox (python -m channels.wechat.sandbox, python -m bot run --sandbox)
    wechat_sandbox_port: int = 5099
    # the WeChat gateway process (channels/wechat/gateway.py): the platform's callback URLs point here
    wechat_port: int = 5006
    # where the gateway asks Rasa for answers (default: this host's rasa_port) and the secret both
    # share (`python -m bot run` makes one per start when unset)
    wechat_rasa_url: Optional[str] = None
    wechat_relay_secret: Optional[SecretStr] = None
    # a relayed turn taking longer than this is given up (recorded as failed, not repeated)
    wechat_relay_timeout_s: float = Field(60.0, gt=0)
    # --- end WeChat ----------------------------------------------------------------------------

    # --- support console and escalation desk (console/, desk/) ----------------------------------
    console_port: int = 5008
    # encrypts the console's session cookies (32 url-safe base64 bytes, e.g. from
    # `python -c "import base64,os;print(base64.urlsafe_b64encode(os.urandom(32)).decode())"`);
    # `python -m bot run` makes one per start when unset (staff then log in again after a restart)
    console_secret: Optional[SecretStr] = None
    # the console tells the Rasa server when a person takes or hands back a conversation
    desk_bridge_secret: Optional[SecretStr] = None
    # demo staff (agent1, agent2, lead, moderator) get this password in demo mode
    demo_staff_password: SecretStr = SecretStr("siyu-demo")
    # behind a TLS-terminating proxy: mark session cookies Secure
    console_secure_cookies: bool = False

    # --- community SOP (community_sop/) ------------------------------------------------------------
    # a post due while the product was down is sent on restart when at most this late, else skipped
    sop_grace_minutes: int = Field(10, ge=0, le=24 * 60)
    # how often the leading scheduler looks for changed plans and settles the execution log
    sop_poll_s: float = Field(2.0, gt=0, le=60)

    # --- one-on-one nudges (nudges/) ---------------------------------------------------------------
    # the shop's back-end posts events to the console's /api/events with "Authorization: Bearer <it>";
    # unset: events are refused (the demo uses siyu-demo-events)
    events_token: Optional[SecretStr] = None
    # demo: the cart-abandonment reminder goes out this many seconds after checkout (not 30 minutes)
    demo_nudge_delay_s: Optional[int] = Field(None, ge=0)

    @model_validator(mode="after")
    def _derived_paths(self) -> "Settings":
        if self.knowledge_index_dir is None:
            self.knowledge_index_dir = Path(self.var_dir) / "knowledge" / "index"
        return self

    @property
    def local_host(self) -> str:
        """The address this machine's processes reach each other on (the host may be 0.0.0.0)."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def rasa_url(self) -> str:
        return (self.wechat_rasa_url or f"http://{self.local_host}:{self.rasa_port}").rstrip("/")

    @property
    def shop(self) -> ShopConfig:
        return _cached_shop(str(self.shop_file), _mtime(self.shop_file))

    @property
    def sync_database_url(self) -> str:
        """URL for blocking drivers (Rasa's tracker store, Alembic)."""
        url = self.database_url
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://"):]
        for async_driver, sync_driver in (("+asyncpg", "+psycopg2"), ("+aiosqlite", "")):
            url = url.replace(async_driver, sync_driver)
        return url

    @property
    def async_database_url(self) -> str:
        """URL for the async engine the actions and channels use."""
        url = self.sync_database_url
        if url.startswith("sqlite:"):
            return "sqlite+aiosqlite:" + url[len("sqlite:"):]
        if url.startswith("postgresql+psycopg2:"):
            return "postgresql+asyncpg:" + url[len("postgresql+psycopg2:"):]
        if url.startswith("postgresql:"):
            return "postgresql+asyncpg:" + url[len("postgresql:"):]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sync_database_url.startswith("sqlite")


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


@functools.lru_cache(maxsize=4)
def _cached_shop(path: str, _mtime_key: float) -> ShopConfig:
    # keyed by mtime so an edited shop file is picked up without a restart
    return load_shop_config(Path(path))


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    """For tests that change the environment."""
    get_settings.cache_clear()
    _cached_shop.cache_clear()


def masked_url(url: str) -> str:
    """A database / redis URL with its password hidden, for log lines."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if not parts.password:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))


os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Rasa would otherwise send telemetry and crash reports to its servers
os.environ.setdefault("RASA_TELEMETRY_ENABLED", "false")
# Rasa 3.6 itself uses SQLAlchemy 1.x APIs; the warning is about Rasa, not our code
os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")
