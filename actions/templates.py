"""Access to actions/templates/*.yml: labels and list-line formats used to fill response variables."""
from __future__ import annotations

import functools
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List
from zoneinfo import ZoneInfo

import yaml

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Dict[str, Any]:
    with open(TEMPLATE_DIR / name, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def t(key: str) -> Any:
    return _load("zh_CN.yml")[key]


def vocabulary(key: str) -> Any:
    return _load("vocabulary.yml")[key]


def fmt(template_key: str, /, **values: Any) -> str:
    return t(template_key).format(**values)


def label(group: str, value: str) -> str:
    return t(group).get(value, value)


def yuan(fen: int) -> str:
    """12900 -> '129', 12950 -> '129.5'."""
    text = f"{fen / 100:.2f}".rstrip("0").rstrip(".")
    return text


def local(dt: datetime, tz: str) -> datetime:
    return dt.replace(tzinfo=timezone.utc).astimezone(ZoneInfo(tz))


def date_text(dt: datetime, tz: str) -> str:
    d = local(dt, tz)
    return fmt("date", month=d.month, day=d.day)


def datetime_text(dt: datetime, tz: str) -> str:
    d = local(dt, tz)
    return fmt("datetime", month=d.month, day=d.day, hour=d.hour, minute=d.minute)


def join(items: List[str]) -> str:
    return t("list_sep").join(items)
