"""Training the model only when its inputs changed (config, domain, stories/rules, NLU data)."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable, List, Optional

from bot.settings import REPO_ROOT, Settings

logger = logging.getLogger(__name__)

CONFIG = REPO_ROOT / "config.yml"
DOMAIN = REPO_ROOT / "bot" / "domain"
STORIES = REPO_ROOT / "bot" / "data"
NLU = REPO_ROOT / "nlu_data"


def training_inputs() -> List[Path]:
    files: List[Path] = [CONFIG]
    for folder in (DOMAIN, STORIES, NLU):
        files.extend(sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".txt")))
    return files


def fingerprint(files: Optional[Iterable[Path]] = None) -> str:
    digest = hashlib.sha256()
    for path in files or training_inputs():
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def model_path(settings: Settings, fp: Optional[str] = None) -> Path:
    return Path(settings.model_dir) / f"siyu-{fp or fingerprint()}.tar.gz"


def train_command(settings: Settings, fp: str, python: str) -> List[str]:
    return [python, "-m", "rasa", "train", "--config", str(CONFIG), "--domain", str(DOMAIN),
            "--data", str(NLU), str(STORIES), "--out", str(settings.model_dir),
            "--fixed-model-name", f"siyu-{fp}"]
