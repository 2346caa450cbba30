"""The fake platform's state and rules: tokens, users and their reply windows, the 微信客服 message
log and session states, every send API with its limits and real error codes, group robots,
mass-send tasks and app messages. Pure logic (no HTTP): app.py maps routes onto these methods;
tests can call them too.

Everything the platform "delivered" to a user, a group or a staff member is recorded in
`deliveries`, so tests can assert that each reply arrived exactly once.
"""
from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import itertools
import secrets
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Deque, Dict, List, Optional, Tuple

from channels.wechat.outbound import errcodes as E
from channels.wechat.sandbox.config import SandboxConfig

Json = Dict[str, Any]


def err(code: int, message: str) -> Json:
    # the real platform appends a request id ("rid") or hint to errmsg
    return {"errcode": code, "errmsg": f"{message}, hint: [sandbox-{secrets.token_hex(4)}]"}


OK: Json = {"errcode": 0, "errmsg": "ok"}


@dataclass
class IssuedToken:
    value: str
    kind: str  # kf / contact / app / mp / mini
    expires_at: float


@dataclass
class Window:
    """The reply window a user's action opened for the account."""

    opened_at: float = 0.0
    sent: int = 0
    event_opened_at: float = 0.0
    event_sent: int = 0


# 微信客服 session states (service_state): new, the API's assistant, waiting in the pool, a servicer
# (in the WeCom client), ended (or never started)
KF_NEW, KF_BOT, KF_POOL, KF_HUMAN, KF_ENDED = 0, 1, 2, 3, 4
# the moves kf/service_state/trans allows (WeCom's 分配客服会话 document); 3 -> 3 hands the session to
# another servicer; an ended session cannot be moved through the API (the customer's next message reopens it)
KF_TRANSITIONS = {
    KF_NEW: {KF_BOT, KF_POOL, KF_HUMAN, KF_ENDED},
    KF_BOT: {KF_POOL, KF_HUMAN, KF_ENDED},
    KF_POOL: {KF_HUMAN, KF_ENDED},
    KF_HUMAN: {KF_POOL, KF_HUMAN, KF_ENDED},
    KF_ENDED: set(),
}


@dataclass
class KfSession:
    """One customer's session with one 微信客服 account."""

    state: int = KF_ENDED
    servicer_userid: str = ""
    msg_code: str = ""  # the last code issued for a welcome / closing event message


@dataclass
class Group:
    chat_id: str
    name: str
    owner: str
    robot_key: Optional[str] = None
    members: List[str] = field(default_factory=list)


@dataclass
class MassTask:
    msgid: str
    sender: str
    chat_ids: List[str]
    content: Json
    created_at: float
    status: str = "waiting"  # waiting (owner has not confirmed) / sent / cancelled
    send_time: int = 0
    results: Dict[str, int] = field(default_factory=dict)  # chat_id -> 1 sent / 3 over monthly quota
    reminders: List[float] = field(default_factory=list)


class Platform:
    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock_offset = 0.0
        self.tokens: Dict[str, IssuedToken] = {}
        # WeCom returns the same token while it is valid: current token per kind
        self.current_token: Dict[str, str] = {}
        self.users: Dict[Tuple[str, str], Json] = {}  # (channel, user id) -> {"unionid": ...}
        self.windows: Dict[Tuple[str, str], Window] = defaultdict(Window)
        self.kf_log: List[Json] = []  # every message users sent to 微信客服, in order
        # cursors carry the epoch they were issued in; a reset on the platform's side (a new epoch)
        # makes every cursor issued before it invalid (reset_kf_cursors)
        self.kf_cursor_epoch = 0
        self.kf_msg_tokens: Dict[str, float] = {}  # sync token -> expiry
        self.kf_msgids: Dict[str, Json] = {}  # msgid -> the delivery it produced (idempotency)
        # (open_kfid, external_userid) -> session; none until the customer first writes (state 4, "not started").
        # Not modelled: the platform ending a session by itself 48 h after the customer's last message
        self.kf_sessions: Dict[Tuple[str, str], KfSession] = {}
        self.deliveries: List[Json] = []
        self.requests: List[Json] = []
        self.groups: Dict[str, Group] = {}
        self.robot_sends: Dict[str, Deque[float]] = defaultdict(deque)
        self.group_mass_sends: Dict[Tuple[str, str], int] = defaultdict(int)  # (chat_id, yyyy-mm) -> count
        self.mass_tasks: Dict[str, MassTask] = {}
        self.app_sends: Dict[str, Deque[float]] = defaultdict(deque)
        self.api_calls: Dict[str, Deque[float]] = defaultdict(deque)
        self.faults: List[Json] = []
        self._ids = itertools.count(1)

    # --- time ----------------------------------------------------------------------------------
    def now(self) -> float:
        return time.time() + self.clock_offset

    def advance(self, seconds: float) -> None:
        self.clock_offset += seconds

    # --- faults injected by tests ---------------------------------------------------------------
    def add_fault(self, api: str, kind: str, times: int = 1, errcode: int = E.SYSTEM_BUSY,
                  delay_s: float = 0.0) -> None:
        """kind: http_500 / errcode / delay (answer late) / delay_after (deliver, then answer late)."""
        if kind not in ("http_500", "errcode", "delay", "delay_after"):
            raise ValueError(f"unknown fault kind {kind}")
        self.faults.append({"api": api, "kind": kind, "times": times, "errcode": errcode, "delay_s": delay_s})

    def take_fault(self, api: str) -> Optional[Json]:
        for fault in self.faults:
            if fault["api"] == api and fault["times"] > 0:
                fault["times"] -= 1
                return dict(fault)
        return None

    # --- recording ------------------------------------------------------------------------------
    def record_request(self, api: str, result: Json) -> None:
        self.requests.append({"api": api, "errcode": result.get("errcode", 0), "at": self.now()})

    def deliver(self, channel: str, to: str, msgtype: str, content: Json, **extra: Any) -> Json:
        record = {"id": next(self._ids), "channel": channel, "to": to, "msgtype": msgtype, "content": content,
                  "at": self.now(), **extra}
        self.deliveries.append(record)
        return record

    # --- rate limit on every API (45009) ------------------------------------------------------------
    def over_api_limit(self, api: str) -> bool:
        limit = self.config.api_limit_per_minute
        if not limit:
            return False
        calls, now = self.api_calls[api], self.now()
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= limit:
            return True
        calls.append(now)
        return False

    # --- tokens ---------------------------------------------------------------------------------
    def _issue(self, kind: str) -> IssuedToken:
        token = IssuedToken("sbx_" + kind + "_" + secrets.token_urlsafe(32), kind,
                            self.now() + self.config.token_ttl_s)
        self.tokens[token.value] = token
        return token

    def wecom_gettoken(self, corpid: Optional[str], corpsecret: Optional[str]) -> Json:
        c = self.config
        if corpid != c.corp_id:
            return err(E.INVALID_APPID, "invalid corpid")
        kinds = {c.kf_secret: "kf", c.contact_secret: "contact", c.app_secret: "app"}
        kind = kinds.get(corpsecret or "") if corpsecret else None
        if not kind:
            return err(E.INVALID_CREDENTIAL, "invalid credential")
        current = self.tokens.get(self.current_token.get(kind, ""))
        if current is None or current.expires_at <= self.now():
            current = self._issue(kind)
            self.current_token[kind] = current.value
        return {"errcode": 0, "errmsg": "ok", "access_token": current.value,
                "expires_in": max(int(current.expires_at - self.now()), 1)}

    def mp_token(self, grant_type: Optional[str], appid: Optional[str], secret: Optional[str]) -> Json:
        c = self.config
        if grant_type != "client_credential":
            return err(40002, "invalid grant_type")
        apps = {c.mp_app_id: ("mp", c.mp_secret), c.mini_app_id: ("mini", c.mini_secret)}
        if not appid or appid not in apps:
            return err(E.INVALID_APPID, "invalid appid")
        kind, expected = apps[appid]
        if secret != expected:
            return err(E.INVALID_APPSECRET, "invalid appsecret")
        # a new token each time; the previous one stays valid for a short overlap only
        previous = self.tokens.get(self.current_token.get(kind, ""))
        if previous is not None:
            previous.expires_at = min(previous.expires_at, self.now() + c.mp_token_overlap_s)
        token = self._issue(kind)
        self.current_token[kind] = token.value
        return {"access_token": token.value, "expires_in": c.token_ttl_s}

    def check_token(self, access_token: Optional[str], *kinds: str) -> Optional[Json]:
        token = self.tokens.get(access_token or "")
        mp_style = "mp" in kinds or "mini" in kinds
        if token is None or token.kind not in kinds:
            return err(E.INVALID_CREDENTIAL if mp_style else E.INVALID_ACCESS_TOKEN,
                       "invalid credential, access_token is invalid or not latest" if mp_style
                       else "invalid access_token")
        if token.expires_at <= self.now():
            return err(E.ACCESS_TOKEN_EXPIRED, "access_token expired")
        return None

    def expire_tokens(self) -> int:
        for token in self.tokens.values():
            token.expires_at = min(token.expires_at, self.now() - 1)
        return len(self.tokens)

    # --- users and windows ------------------------------------------------------------------------
    def user(self, channel: str, user_id: str) -> Json:
        return self.users.setdefault((channel, user_id), {"unionid": "oUnion" + hashlib.sha1(
            f"{channel}:{user_id}".encode()).hexdigest()[:22]})

    def user_acted(self, channel: str, user_id: str, kind: str = "message") -> None:
        """A user message opens the 48 h window; events (follow, menu click, entering a mini-program
        session) open a one-minute window with a few messages."""
        self.user(channel, user_id)
        window = self.windows[(channel, user_id)]
        if kind == "message":
            window.opened_at, window.sent = self.now(), 0
            if channel == "kf":
                self._kf_customer_wrote(self.config.open_kfid, user_id)
        else:
            window.event_opened_at, window.event_sent = self.now(), 0

    def reserve_window(self, channel: str, user_id: str) -> Optional[Json]:
        """None if the platform lets one more message through now, else its error."""
        c, now = self.config, self.now()
        window = self.windows.get((channel, user_id))
        kf = channel == "kf"
        out_code = E.KF_SEND_LIMIT if kf else E.OUT_OF_WINDOW
        quota_code = E.KF_SEND_LIMIT if kf else E.OVER_QUOTA
        if window is None:
            return err(out_code, "response out of time limit or subscription is canceled")
        if window.opened_at and now - window.opened_at <= c.window_s:
            if window.sent < c.window_quota:
                window.sent += 1
                return None
            return err(quota_code, "out of response count limit")
        event_quota = {"mp": c.mp_event_quota, "mini": c.mini_enter_quota}.get(channel, 0)
        if window.event_opened_at and now - window.event_opened_at <= c.event_window_s:
            if window.event_sent < event_quota:
                window.event_sent += 1
                return None
            return err(quota_code, "out of response count limit")
        return err(out_code, "response out of time limit or subscription is canceled")

    # --- 微信客服 -----------------------------------------------------------------------------------
    def kf_user_message(self, external_userid: str, text: str, msgtype: str = "text") -> Tuple[Json, str]:
        """A WeChat user writes to the shop's 微信客服: logged for sync_msg; returns the message and the
        one-time token the callback carries."""
        self.user_acted("kf", external_userid)
        message = {"msgid": "sbxmsg" + secrets.token_hex(10), "open_kfid": self.config.open_kfid,
                   "external_userid": external_userid, "send_time": int(self.now()), "origin": 3,
                   "msgtype": msgtype}
        message[msgtype] = {"content": text} if msgtype == "text" else {"media_id": "sbxmedia" + secrets.token_hex(8)}
        self.kf_log.append(message)
        return message, self._kf_msg_token()

    def kf_enter_session(self, external_userid: str) -> Tuple[Json, str]:
        self.user("kf", external_userid)
        message = {"msgid": "sbxevt" + secrets.token_hex(10), "open_kfid": self.config.open_kfid,
                   "external_userid": external_userid, "send_time": int(self.now()), "origin": 4,
                   "msgtype": "event", "event": {"event_type": "enter_session", "open_kfid": self.config.open_kfid,
                                                  "external_userid": external_userid, "scene": "sandbox"}}
        self.kf_log.append(message)
        return message, self._kf_msg_token()

    def _kf_customer_wrote(self, open_kfid: str, external_userid: str) -> None:
        """A customer message opens a session (state 0) unless one is going on."""
        session = self.kf_sessions.setdefault((open_kfid, external_userid), KfSession())
        if session.state == KF_ENDED:
            session.state, session.servicer_userid = KF_NEW, ""

    def _kf_session_problem(self, body: Json) -> Optional[Json]:
        if body.get("open_kfid") != self.config.open_kfid:
            return err(E.KF_INVALID_OPEN_KFID, "invalid open_kfid")
        user = body.get("external_userid")
        if not isinstance(user, str) or ("kf", user) not in self.users:
            return err(E.INVALID_PARAMETER, "invalid external_userid")
        return None

    def kf_service_state_get(self, body: Json) -> Json:
        problem = self._kf_session_problem(body)
        if problem:
            return problem
        session = self.kf_sessions.get((body["open_kfid"], body["external_userid"])) or KfSession()
        answer: Json = {"errcode": 0, "errmsg": "ok", "service_state": session.state}
        if session.state == KF_HUMAN:
            answer["servicer_userid"] = session.servicer_userid
        return answer

    def kf_service_state_trans(self, body: Json) -> Json:
        problem = self._kf_session_problem(body)
        if problem:
            return problem
        target, servicer = body.get("service_state"), body.get("servicer_userid") or ""
        if isinstance(target, bool) or not isinstance(target, int) or target not in KF_TRANSITIONS:
            return err(E.INVALID_PARAMETER, "invalid service_state")
        if target == KF_HUMAN and servicer not in self.config.staff:
            # the platform's own code for a servicer who is not a 接待人员 of the account is unconfirmed
            return err(E.INVALID_PARAMETER, "invalid servicer_userid")
        key = (body["open_kfid"], body["external_userid"])
        session = self.kf_sessions.get(key) or KfSession()
        same_servicer = target == KF_HUMAN and session.state == KF_HUMAN and servicer == session.servicer_userid
        if target not in KF_TRANSITIONS[session.state] or same_servicer:
            return err(E.KF_INVALID_STATE_TRANSITION, f"service_state {session.state} -> {target} not allowed")
        self.kf_sessions[key] = session
        session.state, session.servicer_userid = target, servicer if target == KF_HUMAN else ""
        answer: Json = {"errcode": 0, "errmsg": "ok"}
        if target in (KF_HUMAN, KF_ENDED):
            session.msg_code = "sbxcode" + secrets.token_hex(12)
            answer["msg_code"] = session.msg_code
        return answer

    def set_kf_state(self, external_userid: str, state: int, servicer_userid: str = "") -> KfSession:
        """What staff do in the WeCom client (take a session from the pool, answer an ended one, end
        it): any state, without the API's transition rules. ValueError for an unknown customer, state
        or servicer."""
        if ("kf", external_userid) not in self.users:
            raise ValueError(f"unknown 微信客服 customer {external_userid}")
        if state not in KF_TRANSITIONS:
            raise ValueError(f"service_state must be 0-4, not {state}")
        if state == KF_HUMAN and servicer_userid not in self.config.staff:
            raise ValueError(f"state 3 needs a servicer_userid among the staff {self.config.staff}")
        session = self.kf_sessions.setdefault((self.config.open_kfid, external_userid), KfSession())
        session.state, session.servicer_userid = state, servicer_userid if state == KF_HUMAN else ""
        return session

    def _kf_msg_token(self) -> str:
        token = "ENC" + secrets.token_urlsafe(30)
        self.kf_msg_tokens[token] = self.now() + self.config.kf_msg_token_ttl_s
        return token

    def reset_kf_cursors(self) -> int:
        """The platform forgets every cursor it issued (sync_msg then answers them 40058); the
        messages stay, for a pull from the start. The new epoch."""
        self.kf_cursor_epoch += 1
        return self.kf_cursor_epoch

    def _cursor(self, position: int) -> str:
        return base64.urlsafe_b64encode(f"sbxcur:{self.kf_cursor_epoch}:{position}".encode()).decode().rstrip("=")

    def _position(self, cursor: str) -> Optional[int]:
        try:
            text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
            prefix, epoch, number = text.split(":")
            return int(number) if prefix == "sbxcur" and int(epoch) == self.kf_cursor_epoch else None
        except (binascii.Error, ValueError, UnicodeDecodeError):
            return None

    def kf_sync_msg(self, body: Json) -> Json:
        token = body.get("token")
        if token:
            expires = self.kf_msg_tokens.get(token)
            if expires is None or expires <= self.now():
                return err(E.KF_INVALID_MSG_TOKEN, "invalid msg token")
        open_kfid = body.get("open_kfid")
        if open_kfid is not None and open_kfid != self.config.open_kfid:
            return err(E.KF_INVALID_OPEN_KFID, "invalid open_kfid")
        cursor = body.get("cursor") or ""
        start = 0
        if cursor:
            position = self._position(str(cursor))
            if position is None or position > len(self.kf_log):
                return err(E.INVALID_PARAMETER, "invalid cursor")
            start = position
        try:
            limit = int(body.get("limit") or 1000)
        except (TypeError, ValueError):
            return err(E.INVALID_PARAMETER, "invalid limit")
        if not 1 <= limit <= 1000:
            return err(E.INVALID_PARAMETER, "invalid limit")
        batch = self.kf_log[start:start + limit]
        end = start + len(batch)
        return {"errcode": 0, "errmsg": "ok", "next_cursor": self._cursor(end),
                "has_more": 1 if end < len(self.kf_log) else 0, "msg_list": batch}

    def kf_send_msg(self, body: Json) -> Json:
        touser, open_kfid, msgid = body.get("touser"), body.get("open_kfid"), body.get("msgid") or ""
        if open_kfid != self.config.open_kfid:
            return err(E.KF_INVALID_OPEN_KFID, "invalid open_kfid")
        if not touser or ("kf", touser) not in self.users:
            return err(E.INVALID_PARAMETER, "invalid external_userid")
        if msgid:
            if len(msgid) > 32 or not all(ch.isalnum() or ch in "_-" for ch in msgid):
                return err(E.INVALID_PARAMETER, "invalid msgid")
            if msgid in self.kf_msgids:
                # the same msgid is the same message: not delivered a second time
                return {"errcode": 0, "errmsg": "ok", "msgid": msgid}
        problem = self._check_content(body, ("text", "image", "voice", "video", "file", "link", "miniprogram",
                                             "msgmenu", "location"))
        if problem:
            return problem
        session = self.kf_sessions.get((open_kfid, touser))
        # only in state 0 or 1 (a session that never started is refused by the window rule, 95001)
        if session is not None and session.state not in (KF_NEW, KF_BOT):
            return err(E.KF_SESSION_STATE_INVALID, "send msg session status invalid")
        refused = self.reserve_window("kf", touser)
        if refused:
            return refused
        msgid = msgid or "sbxsent" + secrets.token_hex(8)
        msgtype = body["msgtype"]
        self.kf_msgids[msgid] = self.deliver("kf", touser, msgtype, body.get(msgtype), msgid=msgid,
                                             account=open_kfid)
        if session is not None and session.state == KF_NEW:
            session.state = KF_BOT  # the API answered: the session is the assistant's
        return {"errcode": 0, "errmsg": "ok", "msgid": msgid}

    def kf_customer_batchget(self, body: Json) -> Json:
        ids = body.get("external_userid_list")
        if not isinstance(ids, list) or not ids or len(ids) > 100:
            return err(E.INVALID_PARAMETER, "invalid external_userid_list")
        found = [i for i in ids if ("kf", i) in self.users]
        return {"errcode": 0, "errmsg": "ok",
                "customer_list": [{"external_userid": i, "nickname": "微信用户", "gender": 0,
                                   "unionid": self.users[("kf", i)]["unionid"]} for i in found],
                "invalid_external_userid": [i for i in ids if i not in found]}

    # --- Official Account / mini-program --------------------------------------------------------------
    def custom_send(self, kind: str, body: Json) -> Json:
        touser = body.get("touser")
        if not touser or (kind, touser) not in self.users:
            return err(E.INVALID_OPENID, "invalid openid")
        allowed = ("text", "image", "voice", "video", "music", "news", "mpnews", "msgmenu", "wxcard",
                   "miniprogrampage") if kind == "mp" else ("text", "image", "link", "miniprogrampage")
        problem = self._check_content(body, allowed)
        if problem:
            return problem
        refused = self.reserve_window(kind, touser)
        if refused:
            return refused
        msgtype = body["msgtype"]
        self.deliver(kind, touser, msgtype, body.get(msgtype))
        return dict(OK)

    def template_send(self, body: Json) -> Json:
        """message/template/send: to a follower, no reply window; the template's fields filled in."""
        touser = body.get("touser")
        if not touser or ("mp", touser) not in self.users:
            return err(E.INVALID_OPENID, "invalid openid")
        data = body.get("data")
        if not isinstance(body.get("template_id"), str) or not body["template_id"] or not isinstance(data, dict) \
                or not all(isinstance(v, dict) and isinstance(v.get("value"), str) for v in data.values()):
            return err(E.INVALID_PARAMETER, "invalid template_id or data")
        record = self.deliver("mp", touser, "template", {"template_id": body["template_id"], "data": data,
                                                          "url": body.get("url")})
        return {"errcode": 0, "errmsg": "ok", "msgid": record["id"]}

    def mp_user_info(self, openid: Optional[str]) -> Json:
        if not openid or ("mp", openid) not in self.users:
            return err(E.INVALID_OPENID, "invalid openid")
        return {"subscribe": 1, "openid": openid, "language": "zh_CN",
                "unionid": self.users[("mp", openid)]["unionid"]}

    def _check_content(self, body: Json, allowed: Tuple[str, ...]) -> Optional[Json]:
        msgtype = body.get("msgtype")
        if msgtype not in allowed or not isinstance(body.get(msgtype), dict):
            return err(E.INVALID_MSGTYPE, "invalid message type")
        if msgtype == "text":
            content = body["text"].get("content")
            if not isinstance(content, str) or not content:
                return err(E.EMPTY_CONTENT, "empty content")
            if len(content.encode("utf-8")) > self.config.text_limit_bytes:
                return err(E.CONTENT_TOO_LONG, "content size out of limit")
        if msgtype == "msgmenu":
            # 微信客服 menu messages: head/tail text up to 1024 bytes, up to 10 items
            menu = body["msgmenu"]
            items = menu.get("list")
            texts = [menu.get("head_content") or "", menu.get("tail_content") or ""]
            if not isinstance(items, list) or not 0 < len(items) <= 10 \
                    or any(len(t.encode("utf-8")) > 1024 for t in texts if isinstance(t, str)):
                return err(E.INVALID_PARAMETER, "invalid msgmenu")
        return None

    # --- groups and robots ----------------------------------------------------------------------------
    def add_group(self, chat_id: str, name: str, owner: str, robot: bool = True,
                  members: Optional[List[str]] = None, robot_key: Optional[str] = None) -> Group:
        key = (robot_key or "sbxrobot" + secrets.token_hex(12)) if robot else None
        group = Group(chat_id, name, owner, key, members or [])
        self.groups[chat_id] = group
        return group

    def group_by_robot(self, key: Optional[str]) -> Optional[Group]:
        return next((g for g in self.groups.values() if key and g.robot_key == key), None)

    def robot_send(self, key: Optional[str], body: Json) -> Json:
        group = self.group_by_robot(key)
        if group is None:
            return err(E.INVALID_WEBHOOK_KEY, "invalid webhook url")
        msgtype = body.get("msgtype")
        content = body.get(msgtype) if isinstance(msgtype, str) else None
        if (msgtype not in ("text", "markdown", "image", "news", "file", "template_card")
                or not isinstance(content, dict)):
            return err(E.INVALID_MSGTYPE, "invalid message type")
        problem = self._robot_content(msgtype, content)
        if problem:
            return problem
        sends, now = self.robot_sends[group.robot_key], self.now()
        while sends and sends[0] <= now - 60:
            sends.popleft()
        if len(sends) >= self.config.robot_per_minute:
            return err(E.ROBOT_RATE_LIMIT, "send too frequently, the robot sends at most 20 messages per minute")
        sends.append(now)
        self.deliver("group", group.chat_id, msgtype, content, via="robot")
        return dict(OK)

    def _robot_content(self, msgtype: str, content: Json) -> Optional[Json]:
        if msgtype in ("text", "markdown"):
            text = content.get("content")
            limit = self.config.text_limit_bytes if msgtype == "text" else self.config.markdown_limit_bytes
            if not isinstance(text, str) or not text:
                return err(E.EMPTY_CONTENT, "empty content")
            if len(text.encode("utf-8")) > limit:
                return err(E.CONTENT_TOO_LONG, "content size out of limit")
            mentioned = content.get("mentioned_list", [])
            if not isinstance(mentioned, list) or not all(isinstance(m, str) for m in mentioned):
                return err(E.INVALID_PARAMETER, "invalid mentioned_list")
        elif msgtype == "image":
            try:
                raw = base64.b64decode(content.get("base64") or "", validate=True)
            except (binascii.Error, ValueError):
                return err(E.INVALID_PARAMETER, "invalid image base64")
            if not raw or len(raw) > 2 * 1024 * 1024:
                return err(40009, "invalid image size")
            if hashlib.md5(raw).hexdigest() != content.get("md5"):
                return err(E.INVALID_PARAMETER, "image md5 mismatch")
        elif msgtype == "news":
            articles = content.get("articles")
            if not isinstance(articles, list) or not 1 <= len(articles) <= 8 or not all(
                    isinstance(a, dict) and a.get("title") and a.get("url") for a in articles):
                return err(E.INVALID_PARAMETER, "news needs 1-8 articles with title and url")
        return None

    # --- mass-send tasks to customer groups ---------------------------------------------------------------
    def add_msg_template(self, body: Json) -> Json:
        if body.get("chat_type") != "group":
            return err(E.INVALID_PARAMETER, "only chat_type=group is simulated")
        sender = body.get("sender")
        if not sender or sender not in self.config.staff:
            return err(E.APP_INVALID_USER, "invalid sender")
        chat_ids = body.get("chat_id_list") or [g.chat_id for g in self.groups.values() if g.owner == sender]
        if not isinstance(chat_ids, list) or len(chat_ids) > 2000:
            return err(E.INVALID_PARAMETER, "chat_id_list holds at most 2000 groups")
        if any(chat not in self.groups or self.groups[chat].owner != sender for chat in chat_ids):
            return err(E.INVALID_PARAMETER, "chat_id_list has a group the sender does not own")
        attachments = body.get("attachments") or []
        if not isinstance(attachments, list) or len(attachments) > 9:
            return err(E.INVALID_PARAMETER, "at most 9 attachments")
        text = (body.get("text") or {}).get("content", "")
        if not text and not attachments:
            return err(E.EMPTY_CONTENT, "empty content")
        if len(text.encode("utf-8")) > 4000:
            return err(E.CONTENT_TOO_LONG, "content size out of limit")
        msgid = "msgsbx" + secrets.token_hex(12)
        self.mass_tasks[msgid] = MassTask(msgid, sender, list(chat_ids),
                                          {"text": body.get("text"), "attachments": attachments}, self.now())
        return {"errcode": 0, "errmsg": "ok", "fail_list": [], "msgid": msgid}

    def owner_confirms(self, msgid: str) -> Json:
        """The group owner taps "send" in the WeCom client: each group gets the message unless it has
        had as many mass messages this month as the month has days."""
        task = self.mass_tasks.get(msgid)
        if task is None or task.status != "waiting":
            return err(E.INVALID_PARAMETER, "no waiting task with this msgid")
        moment = datetime.fromtimestamp(self.now(), timezone.utc)
        month = moment.strftime("%Y-%m")
        quota = calendar.monthrange(moment.year, moment.month)[1]
        for chat_id in task.chat_ids:
            if self.group_mass_sends[(chat_id, month)] >= quota:
                task.results[chat_id] = 3
                continue
            self.group_mass_sends[(chat_id, month)] += 1
            task.results[chat_id] = 1
            self.deliver("group", chat_id, "mass", task.content, via="mass_send", msgid=msgid)
        task.status, task.send_time = "sent", int(self.now())
        return dict(OK)

    def get_groupmsg_task(self, body: Json) -> Json:
        task = self.mass_tasks.get(body.get("msgid") or "")
        if task is None:
            return err(E.INVALID_PARAMETER, "invalid msgid")
        status = {"waiting": 0, "sent": 2, "cancelled": 0}[task.status]
        return {"errcode": 0, "errmsg": "ok", "next_cursor": "",
                "task_list": [{"userid": task.sender, "status": status, "send_time": task.send_time}]}

    def get_groupmsg_send_result(self, body: Json) -> Json:
        task = self.mass_tasks.get(body.get("msgid") or "")
        if task is None:
            return err(E.INVALID_PARAMETER, "invalid msgid")
        if body.get("userid") != task.sender:
            return err(E.APP_INVALID_USER, "invalid userid")
        return {"errcode": 0, "errmsg": "ok", "next_cursor": "", "send_list": [
            {"chat_id": chat, "userid": task.sender, "status": task.results.get(chat, 0),
             "send_time": task.send_time if task.results.get(chat) == 1 else 0} for chat in task.chat_ids]}

    def remind_groupmsg_send(self, body: Json) -> Json:
        task = self.mass_tasks.get(body.get("msgid") or "")
        if task is None or task.status != "waiting":
            return err(E.INVALID_PARAMETER, "invalid msgid")
        now = self.now()
        task.reminders = [t for t in task.reminders if t > now - 86400]
        if len(task.reminders) >= 3:
            return err(E.API_FREQ_LIMIT, "remind at most 3 times per 24 hours")
        task.reminders.append(now)
        self.deliver("staff", task.sender, "mass_reminder", {"msgid": task.msgid})
        return dict(OK)

    def cancel_groupmsg_send(self, body: Json) -> Json:
        task = self.mass_tasks.get(body.get("msgid") or "")
        if task is None:
            return err(E.INVALID_PARAMETER, "invalid msgid")
        if task.status == "waiting":
            task.status = "cancelled"
        return dict(OK)

    # --- app messages to staff ----------------------------------------------------------------------------
    def app_message_send(self, body: Json) -> Json:
        if body.get("agentid") != self.config.app_agent_id:
            return err(E.INVALID_AGENTID, "invalid agentid")
        problem = self._check_content(body, ("text", "markdown", "textcard", "news"))
        if problem:
            return problem
        users = [u for u in str(body.get("touser") or "").split("|") if u]
        valid = [u for u in users if u in self.config.staff]
        if not valid:
            return err(E.APP_INVALID_USER, "invalid user")
        msgtype, now = body["msgtype"], self.now()
        for user in valid:
            sends = self.app_sends[user]
            while sends and sends[0] <= now - 3600:
                sends.popleft()
            last_minute = sum(1 for t in sends if t > now - 60)
            sends.append(now)
            # over the per-member limits the platform drops the message without telling the caller
            dropped = last_minute >= self.config.app_per_member_minute or len(sends) > self.config.app_per_member_hour
            self.deliver("staff", user, msgtype, body.get(msgtype), dropped=dropped)
        invalid = [u for u in users if u not in valid]
        return {"errcode": 0, "errmsg": "ok", "invaliduser": "|".join(invalid),
                "msgid": "sbxapp" + secrets.token_hex(8)}
