"""The desk's words for staff (desk/labels.yml), so Chinese text stays out of the code."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Dict

import yaml

LABELS_FILE = Path(__file__).resolve().parent / "labels.yml"


@functools.lru_cache(maxsize=1)
def _all() -> Dict[str, Dict[Any, str]]:
    return yaml.safe_load(LABELS_FILE.read_text(encoding="utf-8"))


def labels(group: str) -> Dict[Any, str]:
    return dict(_all()[group])


def label(group: str, key: Any, default: str = "", **values: Any) -> str:
    text = _all()[group].get(key, default)
    return text.format(**values) if values else text
