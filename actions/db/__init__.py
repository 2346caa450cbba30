"""The shop's data: SQLAlchemy models, engines, migrations, demo data and the importer."""
