"""Schema migrations (Alembic), run programmatically so no alembic.ini has to be found."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from alembic import command
from alembic.config import Config

from bot.settings import Settings, get_settings, masked_url

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(settings: Optional[Settings] = None) -> Config:
    settings = settings or get_settings()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' must be escaped for ConfigParser interpolation (passwords may contain it)
    cfg.set_main_option("sqlalchemy.url", settings.sync_database_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Optional[Settings] = None) -> None:
    settings = settings or get_settings()
    logger.info("migrating database %s", masked_url(settings.sync_database_url))
    command.upgrade(alembic_config(settings), "heads")


def revision(message: str, settings: Optional[Settings] = None) -> None:
    """Developers: autogenerate a migration from the models."""
    command.revision(alembic_config(settings), message=message, autogenerate=True)
