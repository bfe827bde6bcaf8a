"""Persistence: SQLAlchemy models, the engine, and schema migrations."""
