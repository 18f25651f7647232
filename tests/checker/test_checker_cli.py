"""``stope share verify`` prints what the server would compute for a real block's share."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from pool.cli import main

from test_checker_verify import _meta, _wire_lines  # type: ignore[import-not-found]


def test_share_verify_cli_on_a_real_block(shared: Path, vectors: dict) -> None:
    meta = _meta(vectors, "block574200.blk")
    notify, en1, submit, _ = _wire_lines(shared, meta)
    args = ["share", "verify", "--notify", notify, "--extranonce1", en1, "--submit", submit, "--mask", "1fffe000"]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["block_hash"] == meta["block_hash"]
    assert out["verdict"] == "block"
    table = CliRunner().invoke(main, args)
    assert table.exit_code == 0 and meta["block_hash"] in table.output


def test_share_verify_cli_refuses_garbage() -> None:
    result = CliRunner().invoke(main, ["share", "verify", "--notify", "{}", "--extranonce1", "00", "--submit", "x"])
    assert result.exit_code != 0
    assert "cannot verify" in result.output
