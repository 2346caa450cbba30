"""Reading callback bodies: bounded, entity-free XML and JSON into plain dicts, and the one inbound
message type every connector hands to the pipeline."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Optional

from channels.wechat.inbound.crypto import MalformedCallback

# The largest legitimate callback (2048-byte text, encrypted and base64'd, plus envelope) is ~4 KB;
# anything far beyond is not from the platform.
MAX_BODY_BYTES = 64 * 1024
# the platform's XML is two levels deep (a group callback's <From><UserId>); a body nested much
# deeper would only exhaust the recursion of the parsers below
MAX_DEPTH = 8
_DTD_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.I)


def parse_xml(body: bytes) -> Dict[str, Any]:
    """The children of the root <xml> element as a dict (nested elements as nested dicts)."""
    if not body or not body.strip():
        raise MalformedCallback("empty body")
    if len(body) > MAX_BODY_BYTES:
        raise MalformedCallback(f"body of {len(body)} bytes is too large")
    # entity declarations are how XML bombs and external-entity reads work; the platform never sends them
    if _DTD_RE.search(body):
        raise MalformedCallback("DOCTYPE / ENTITY declarations are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise MalformedCallback(f"body is not well-formed XML ({exc})")
    if root.tag != "xml":
        raise MalformedCallback("root element is not <xml>")
    return _element_dict(root, MAX_DEPTH)


def _element_dict(element: ET.Element, depth: int) -> Dict[str, Any]:
    if depth <= 0:
        raise MalformedCallback(f"body is nested more than {MAX_DEPTH} levels deep")
    result: Dict[str, Any] = {}
    for child in element:
        result[child.tag] = _element_dict(child, depth - 1) if len(child) else (child.text or "").strip()
    return result


def parse_json(body: bytes) -> Dict[str, Any]:
    if not body or not body.strip():
        raise MalformedCallback("empty body")
    if len(body) > MAX_BODY_BYTES:
        raise MalformedCallback(f"body of {len(body)} bytes is too large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedCallback("body is not valid JSON")
    except RecursionError:
        raise MalformedCallback("body is nested too deeply")
    if not isinstance(data, dict):
        raise MalformedCallback("body is not a JSON object")
    return data


def required(data: Dict[str, Any], key: str) -> str:
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()) or isinstance(value, (dict, list)):
        raise MalformedCallback(f"field {key} is missing")
    return str(value).strip()


def int_field(data: Dict[str, Any], key: str) -> int:
    try:
        return int(str(data.get(key)).strip())
    except (TypeError, ValueError):
        raise MalformedCallback(f"field {key} is not a number")


@dataclass
class InboundMessage:
    """One thing a user did on a channel, normalised for the pipeline."""

    channel: str  # wecom_kf / mp / mini / group
    user_id: str  # external_userid / openid / the group member's userid
    dedup_key: str  # the platform's message id; for events sender + CreateTime (+ event)
    msg_type: str  # text / image / voice / event / ...
    sent_at: int  # Unix seconds, as the platform reports it
    account: str = ""  # open_kfid / the account's original id / the group's chat id
    text: Optional[str] = None
    event: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "InboundMessage":
        return cls(**data)


def event_dedup_key(sender: str, create_time: int, event: str) -> str:
    # events carry no MsgId; the platform's retries repeat sender and CreateTime
    return f"{sender}:{create_time}:{event}"
