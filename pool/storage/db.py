"""Engine creation and schema migrations: the same code on SQLite (WAL) and PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a commit survives a process crash; only an
            # OS crash can lose the last commits, and the spool covers those
            # (the writer fsyncs the log, ShareStore.sync, before it deletes
            # the spool segments holding the same rows).
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # A dead server must fail a connection attempt quickly, not hang the writer.
    connect_args = {"connect_timeout": 5} if parsed.get_backend_name() == "postgresql" else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` in place (a no-op when already there)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    log.info("database schema at revision %s (%s)", current_revision(engine), engine.url.render_as_string(hide_password=True))


def downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def create_schema(engine: Engine) -> None:
    """Kept for callers of the pre-migration API: the schema now comes from migrations."""
    upgrade(engine)


def try_upgrade(engine: Engine) -> bool:
    """Upgrade now if the database answers; False if it is unreachable (upgrade later)."""
    from sqlalchemy.exc import OperationalError

    try:
        upgrade(engine)
    except OperationalError as exc:
        log.error(
            "database %s unreachable at start (%s); shares go to the spool and the schema is "
            "upgraded once it answers", engine.url.render_as_string(hide_password=True), str(exc).strip().splitlines()[0],
        )
        return False
    return True
