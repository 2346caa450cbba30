"""Structured logs with personal data masked before anything is written.

Phone numbers, addresses, ID numbers and e-mail addresses are masked in every message and field;
fields that are known to carry names are masked as well. Used by every process of the product.
"""
from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

PHONE_RE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
ID_CARD_RE = re.compile(r"(?<!\d)(\d{6})\d{8}(\d{3}[\dXx])(?!\d)")
EMAIL_RE = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*(@[A-Za-z0-9.-]+\.[A-Za-z]{2,})")
# keep the region (省/市/区/县), mask the street part
ADDRESS_RE = re.compile(
    r"((?:[\u4e00-\u9fa5]{2,9}?(?:省|自治区|市|特别行政区))?(?:[\u4e00-\u9fa5]{1,9}?(?:市|州|盟))?"
    r"(?:[\u4e00-\u9fa5]{1,9}?(?:区|县|旗)))"
    r"[\u4e00-\u9fa5A-Za-z0-9\-#（）()]{2,60}?(?:号|室|栋|幢|单元|楼|村|组)(?:[\u4e00-\u9fa5A-Za-z0-9\-#]{0,20}(?:室|号|楼))?")
NAME_FIELDS = {"name", "customer_name", "receiver_name", "receiver", "nickname"}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def mask_text(text: str) -> str:
    text = PHONE_RE.sub(r"\1****\2", text)
    text = ID_CARD_RE.sub(r"\1********\2", text)
    text = EMAIL_RE.sub(r"\1***\2", text)
    text = ADDRESS_RE.sub(r"\1***", text)
    return text


def mask_name(name: str) -> str:
    return name[:1] + "*" * max(len(name) - 1, 1) if name else name


def mask_value(key: str, value: Any) -> Any:
    if isinstance(value, str):
        return mask_name(value) if key in NAME_FIELDS else mask_text(value)
    if isinstance(value, dict):
        return {k: mask_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_value(key, v) for v in value]
    return value


class MaskPersonalData(logging.Filter):
    """Rewrites the record in place so every handler (and formatter) only sees masked data."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken format string must not lose the record
            message = str(record.msg)
        record.msg = mask_text(message)
        record.args = ()
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, mask_value(key, value))
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, *args: Any, process_name: str = "", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self.process_name:
            entry["proc"] = self.process_name
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = mask_text(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str = "INFO", fmt: str = "json", process_name: str = "") -> None:
    """Root logging for one process of the product (stdout; the launcher prefixes and merges)."""
    import sys

    handler = logging.StreamHandler(sys.stdout)
    handler.addFilter(MaskPersonalData())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(process_name=process_name))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # chatty libraries stay at warning level
    for name in ("sanic.access", "urllib3", "asyncio", "aiosqlite", "matplotlib", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.WARNING)
