"""Storage on SQLAlchemy 2 Core: embedded SQLite by default, PostgreSQL to scale out."""
