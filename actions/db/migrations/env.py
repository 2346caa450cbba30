from __future__ import annotations

from alembic import context

# every model module must be imported so autogenerate sees its tables
import actions.db.models  # noqa: F401
import channels.wechat.models  # noqa: F401  (wechat_* tables, migration 0003)
import community_sop.models  # noqa: F401  (sop_* tables, migration 0007)
import desk.models  # noqa: F401  (desk_* and staff_users, migration 0006)
import knowledge.models  # noqa: F401  (kb_entries, kb_corrections)
import nudges.models  # noqa: F401  (nudge_* tables, migration 0008)
from actions.db.engine import create_sync_engine
from actions.db.models import Base
from bot.settings import Settings

target_metadata = Base.metadata


def _include_object(obj, name, type_, reflected, compare_to):
    # Rasa's tracker store owns the "events" table on the same database
    if type_ == "table" and name == "events":
        return False
    return True


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    settings = Settings(DATABASE_URL=url)
    engine = create_sync_engine(settings)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            include_object=_include_object,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
