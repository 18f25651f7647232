"""``stope stats concentration --pool/--network``: the wired data sources."""

from __future__ import annotations

import datetime as dt
import json
from fractions import Fraction
from pathlib import Path

from click.testing import CliRunner
from sqlalchemy.orm import Session

from pool.cli import main
from pool.stats_providers import pool_weights
from pool.storage.db import make_engine
from pool.storage.models import Base, Miner, Share, Worker

NOW = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.timezone.utc)


def seed(url: str) -> None:
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    with Session(engine) as session, session.begin():
        a, b = Miner(address="bcrt1qa"), Miner(address="bcrt1qb")
        session.add_all([a, b])
        session.flush()
        a1, a2, b1 = Worker(miner_id=a.id, name="r1"), Worker(miner_id=a.id, name="r2"), Worker(miner_id=b.id, name="r1")
        session.add_all([a1, a2, b1])
        session.flush()
        rows = [
            (a1, Fraction(1, 3), 2),  # 25 h ago: outside a 24 h window
            (a1, Fraction(1, 3), 1),
            (a1, Fraction(1, 3), 1),
            (a2, Fraction(1, 7), 1),
            (b1, Fraction(2), 1),
        ]
        for n, (worker, difficulty, hours_ago) in enumerate(rows):
            ago = dt.timedelta(hours=25) if hours_ago == 2 else dt.timedelta(minutes=10 + n)
            session.add(
                Share(
                    share_hash=f"{n:064x}",
                    worker_id=worker.id,
                    job_id="1",
                    height=1,
                    difficulty=difficulty,
                    network_difficulty=Fraction(1),
                    is_block=False,
                    created_at=NOW - ago,
                )
            )
    engine.dispose()


def test_pool_weights_are_exact_and_windowed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    seed(url)
    engine = make_engine(url)
    try:
        weights = pool_weights(engine, since=NOW - dt.timedelta(hours=24))
    finally:
        engine.dispose()
    assert weights == {"bcrt1qa": Fraction(2, 3) + Fraction(1, 7), "bcrt1qb": Fraction(2)}


def test_pool_view_through_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite:///{data / 'stope.sqlite3'}"
    seed(url)
    config = tmp_path / "pool.toml"
    # A window long enough to reach the fixed NOW from today's clock.
    config.write_text(f'[pool]\ndata_dir = "{data}"\n[concentration]\npool_window = 1e12\n')
    result = CliRunner().invoke(main, ["stats", "concentration", "--pool", "--json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["source"] == "pool" and out["entities"] == 2
    assert out["ranking"][0]["entity"] == "bcrt1qb"
    assert out["total"] == float(Fraction(2, 3) + Fraction(1, 7) + Fraction(2) + Fraction(1, 3))


def test_pool_view_without_a_database_says_so(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text(f'[pool]\ndata_dir = "{tmp_path / "nothing"}"\n')
    result = CliRunner().invoke(main, ["stats", "concentration", "--pool", "--config", str(config)])
    assert result.exit_code != 0 and "no database" in result.output
    assert not (tmp_path / "nothing").exists()  # and did not create one


def test_network_view_needs_a_pools_file(tmp_path: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text("")
    result = CliRunner().invoke(main, ["stats", "concentration", "--network", "--config", str(config)])
    assert result.exit_code == 2 and "pools_file" in result.output


def test_network_view_reports_an_unreachable_node(tmp_path: Path, shared: Path) -> None:
    config = tmp_path / "pool.toml"
    config.write_text(
        f'[node]\nurl = "http://127.0.0.1:1/"\ntimeout = 1\n'
        f'[concentration]\npools_file = "{shared / "data" / "pools-v2.json"}"\n'
    )
    result = CliRunner().invoke(main, ["stats", "concentration", "--network", "--config", str(config)])
    assert result.exit_code == 1 and "node" in result.output


def test_config_from_the_environment(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "pool.toml"
    config.write_text(f'[pool]\ndata_dir = "{tmp_path / "env-data"}"\n')
    monkeypatch.setenv("STOPE_CONFIG", str(config))
    result = CliRunner().invoke(main, ["stats", "concentration", "--pool"])
    assert "env-data" in result.output
