"""``stope share verify``: recompute a share from its wire messages.

For operators and firmware authors: paste the ``mining.notify`` and the
``mining.submit`` exactly as sent and see every intermediate value the
server computes, with the same code the server uses.
"""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from .checker.verify import verify_from_wire


@click.group()
def share() -> None:
    """Tools for single shares."""


@share.command("verify")
@click.option("--notify", "notify_line", required=True, help="the mining.notify line as sent on the wire")
@click.option("--extranonce1", required=True, help="the connection's extranonce1 (hex, from the subscribe reply)")
@click.option("--submit", "submit_line", required=True, help="the mining.submit line as sent on the wire")
@click.option("--mask", default=None, help="negotiated version-rolling mask (hex); omit if rolling was not negotiated")
@click.option("--difficulty", default="1", show_default=True, help="share difficulty in force for the job")
@click.option("--backend", type=click.Choice(["scalar", "numba"]), default="scalar", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print machine-readable JSON")
def verify(notify_line: str, extranonce1: str, submit_line: str, mask: str | None, difficulty: str, backend: str, as_json: bool) -> None:
    """Print coinbase, merkle root, header, block hash, share difficulty and the verdict."""
    try:
        mask_value = None if mask is None else int(mask, 16)
        result = verify_from_wire(notify_line, extranonce1, submit_line, mask_value, difficulty, backend=backend)  # type: ignore[arg-type]
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise click.ClickException(f"cannot verify: {exc}") from exc
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
        return
    table = Table(title="share verification", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in result.items():
        table.add_row(key, json.dumps(value, default=str) if not isinstance(value, str) else value)
    Console(width=160).print(table)
