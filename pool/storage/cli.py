"""``stope db``: migrations, retention (compaction) and spool replay, for operators."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from pathlib import Path

import click
from sqlalchemy import Engine
from sqlalchemy.orm import Session

_config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="TOML configuration (default: the embedded defaults, SQLite under .stope)",
)
_url_option = click.option("--url", default=None, help="database URL (overrides the configuration)")


def _engine(config_path: Path | None, url: str | None) -> Engine:
    from ..config import ConfigError, load_settings
    from .db import make_engine

    if url is None:
        try:
            url = load_settings(config_path).database_url
        except ConfigError as exc:
            raise click.ClickException(f"invalid configuration: {exc}") from exc
    return make_engine(url)


@click.group()
def db() -> None:
    """Database: schema migrations, share compaction, spool replay."""


@db.command("upgrade")
@_config_option
@_url_option
@click.option("--revision", default="head", show_default=True, help="target revision")
def upgrade_command(config_path: Path | None, url: str | None, revision: str) -> None:
    """Upgrade the schema in place (the pool also does this at start)."""
    from .db import current_revision, upgrade

    engine = _engine(config_path, url)
    try:
        before = current_revision(engine)
        upgrade(engine, revision)
        click.echo(f"schema: {before or 'empty'} -> {current_revision(engine)}")
    finally:
        engine.dispose()


@db.command("downgrade")
@_config_option
@_url_option
@click.argument("revision")
def downgrade_command(config_path: Path | None, url: str | None, revision: str) -> None:
    """Downgrade the schema to REVISION ("base" drops everything)."""
    from .db import current_revision, downgrade

    engine = _engine(config_path, url)
    try:
        downgrade(engine, revision)
        click.echo(f"schema: {current_revision(engine) or 'empty'}")
    finally:
        engine.dispose()


@db.command("current")
@_config_option
@_url_option
def current_command(config_path: Path | None, url: str | None) -> None:
    """Show the schema revision and the newest one available."""
    from .db import current_revision, head_revision

    engine = _engine(config_path, url)
    try:
        click.echo(f"current: {current_revision(engine) or 'empty'}  head: {head_revision()}")
    finally:
        engine.dispose()


def _duration_days(value: str) -> dt.timedelta:
    try:
        days = float(value)
    except ValueError as exc:
        raise click.BadParameter(f"not a number of days: {value!r}") from exc
    if days < 0:
        raise click.BadParameter("must not be negative")
    return dt.timedelta(days=days)


@db.command("compact")
@_config_option
@_url_option
@click.option("--older-than", default="7", show_default=True, help="only shares older than this many days")
@click.option("--window-factor", default="2", show_default=True,
              help="PPLNS window X (score d/D); shares in the newest window and unpaid blocks' windows are kept")
@click.option("--no-pplns", is_flag=True, help="the pool does not pay PPLNS: no window to keep")
@click.option("--pps", is_flag=True, help="the pool pays PPS/FPPS: keep shares not yet credited in the ledger")
@click.option("--bucket-seconds", type=click.IntRange(min=60), default=3600, show_default=True, help="aggregate bucket length")
@click.option("--dry-run", is_flag=True, help="show what would be compacted, change nothing")
def compact_command(config_path: Path | None, url: str | None, older_than: str, window_factor: str, no_pplns: bool,
                    pps: bool, bucket_seconds: int, dry_run: bool) -> None:
    """Fold old share rows into per-worker aggregates (hashrate history is kept)."""
    from sqlalchemy import func, select

    from .compact import compact, plan_compaction
    from .models import Share

    try:
        factor = None if no_pplns else Fraction(window_factor)
    except (ValueError, ZeroDivisionError) as exc:
        raise click.BadParameter(f"not a number: {window_factor!r}", param_hint="--window-factor") from exc
    if factor is not None and factor <= 0:
        raise click.BadParameter("must be positive", param_hint="--window-factor")
    engine = _engine(config_path, url)
    try:
        with Session(engine) as session:
            plan = plan_compaction(session, older_than=_duration_days(older_than), window_factor=factor, pps=pps)
            query = select(func.count()).select_from(Share).where(Share.created_at < plan.cutoff, Share.is_block.is_(False))
            if plan.keep_from_id is not None:
                query = query.where(Share.id < plan.keep_from_id)
            eligible = session.scalar(query) or 0
        click.echo(f"compactable shares: {eligible} ({'; '.join(plan.reasons)})")
        if dry_run or not eligible:
            return
        result = compact(engine, plan, bucket_seconds=bucket_seconds)
        click.echo(f"compacted {result.shares} share(s) into {result.buckets} bucket(s), difficulty {float(result.difficulty):.6g}")
    finally:
        engine.dispose()


@db.command("replay")
@_config_option
@_url_option
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path, exists=True, dir_okay=False))
def replay_command(config_path: Path | None, url: str | None, files: tuple[Path, ...]) -> None:
    """Insert the records of spool or quarantine FILES (idempotent: present shares are skipped)."""
    from .spool import decode_segment
    from .store import ShareStore

    engine = _engine(config_path, url)
    try:
        store = ShareStore(engine)
        for path in files:
            decoded = decode_segment(path.read_bytes())
            inserted = 0
            for i in range(0, len(decoded.entries), 5000):
                # replay=True: the schema does not refuse a share stored twice; this skips those already stored.
                inserted += store.write(decoded.entries[i : i + 5000], replay=True)
            bad = decoded.torn_bytes + decoded.corrupt_bytes
            click.echo(f"{path}: {len(decoded.entries)} record(s), {inserted} new share row(s)"
                       + (f", {bad} unreadable byte(s) at the end" if bad else ""))
    finally:
        engine.dispose()
