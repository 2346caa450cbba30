"""The platform's error codes this product reacts to, shared by the API client and the sandbox.

Codes marked "unconfirmed" could not be checked against the official documentation; the client
treats every code it does not know as a permanent failure that is shown to staff with the code.
"""
from __future__ import annotations

SYSTEM_BUSY = -1
OK = 0
INVALID_CREDENTIAL = 40001  # Official Account: invalid access_token or AppSecret; WeCom gettoken: invalid secret
INVALID_OPENID = 40003
INVALID_MSGTYPE = 40008
INVALID_APPID = 40013  # also WeCom's invalid corpid
INVALID_ACCESS_TOKEN = 40014
INVALID_PARAMETER = 40058
INVALID_APPSECRET = 40125
ACCESS_TOKEN_EXPIRED = 42001
CONTENT_TOO_LONG = 45002
API_FREQ_LIMIT = 45009
OUT_OF_WINDOW = 45015  # Official Account / mini-program: "response out of time limit"
CONCURRENCY_LIMIT = 45033
OVER_QUOTA = 45047  # Official Account / mini-program: "out of response count limit"
APP_INVALID_USER = 81013
INVALID_WEBHOOK_KEY = 93000
KF_INVALID_OPEN_KFID = 95000  # unconfirmed
KF_SEND_LIMIT = 95001  # 微信客服: over 5 messages, or outside 48 h of the user's last message
KF_INVALID_MSG_TOKEN = 95007
# 微信客服 kf/service_state/trans: the move is not allowed from the session's current state ("不允许这个状态
# 转换"; unconfirmed: the project's notes name no code for it, this one is the support desk's assumption)
KF_INVALID_STATE_TRANSITION = 95016
# 微信客服 kf/send_msg: the session is not in state 0 or 1 (waiting in the pool, taken by a servicer in the
# WeCom client, or ended); the real errmsg is "send msg session status invalid"
KF_SESSION_STATE_INVALID = 95018
ROBOT_RATE_LIMIT = 130101  # group robot: over 20 messages per minute

# kf/sync_msg: the cursor is not (any longer) known to the platform, e.g. after a reset on its side
# (40058 "invalid parameter" is the code seen; whether others exist is unconfirmed)
KF_CURSOR_REJECTED = frozenset({INVALID_PARAMETER})
# the access_token the call used is no longer valid: fetch a new one and repeat the call once
TOKEN_ERRORS = frozenset({INVALID_CREDENTIAL, INVALID_ACCESS_TOKEN, ACCESS_TOKEN_EXPIRED})
# the platform is busy or rate limiting: the same call may succeed later
TRANSIENT_ERRORS = frozenset({SYSTEM_BUSY, API_FREQ_LIMIT, CONCURRENCY_LIMIT})
# the platform refuses to deliver to this recipient now: retrying does not help until the user writes again
REFUSAL_REASONS = {
    OUT_OF_WINDOW: "out_of_window",
    OVER_QUOTA: "over_quota",
    KF_SEND_LIMIT: "out_of_window_or_over_quota",
}
# permanent for the message: failed at once with this text for staff, not retried (when the session
# allows sending again, a servicer has answered or the customer has started over: the message is stale)
FAILURE_REASONS = {
    KF_SESSION_STATE_INVALID: "会话状态不允许发送（客服已在企业微信中接待或会话已结束）",
    KF_INVALID_STATE_TRANSITION: "不允许这个会话状态变更",
}
EMPTY_CONTENT = 44004
INVALID_AGENTID = 40056
