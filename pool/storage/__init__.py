"""Share and block records (SQLAlchemy 2.x; SQLite embedded, PostgreSQL in production)."""
