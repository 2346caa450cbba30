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


def corrections_data(settings: Optional[Settings] = None) -> Optional[Path]:
    """NLU examples from the desk's 错题本 (desk/corrections.py exports them before training)."""
    from bot.settings import get_settings
    from desk.corrections import corrections_file

    path = corrections_file(settings or get_settings())
    return path if path.exists() else None


def training_inputs(settings: Optional[Settings] = None) -> List[Path]:
    files: List[Path] = [CONFIG]
    for folder in (DOMAIN, STORIES, NLU):
        files.extend(sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in (".yml", ".yaml", ".txt")))
    extra = corrections_data(settings)
    if extra is not None:
        files.append(extra)
    return files


def fingerprint(files: Optional[Iterable[Path]] = None) -> str:
    digest = hashlib.sha256()
    for path in files or training_inputs():
        name = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else f"corrections/{path.name}"
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def model_path(settings: Settings, fp: Optional[str] = None) -> Path:
    return Path(settings.model_dir) / f"siyu-{fp or fingerprint()}.tar.gz"


def train_command(settings: Settings, fp: str, python: str) -> List[str]:
    extra = corrections_data(settings)
    data = [str(NLU), str(STORIES)] + ([str(extra)] if extra is not None else [])
    return [python, "-m", "rasa", "train", "--config", str(CONFIG), "--domain", str(DOMAIN),
            "--data", *data, "--out", str(settings.model_dir), "--fixed-model-name", f"siyu-{fp}"]
