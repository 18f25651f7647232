"""``stope stats``: concentration figures from a weights file or a wired data source.

The network view (blocks per pool over a window) and the pool view (share
difficulty per miner) need live data this module does not own, so they are
*providers*: callables handed to ``make_stats_group``.  The module-level
``stats`` group has none wired, and ``--network`` / ``--pool`` then fail with a
clear usage error; ``--weights FILE.json`` always works.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table

from .concentration import (
    ConcentrationReport,
    Figure,
    Guideline,
    Weight,
    concentration_report,
)

Provider = Callable[[click.Context], Mapping[str, Weight]]
"""Returns ``entity -> weight`` for one view; gets the click context for config."""


@dataclass(frozen=True)
class StatsProviders:
    """Data sources for ``--network`` and ``--pool`` (None: not wired yet)."""

    network: Provider | None = None
    pool: Provider | None = None


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a weight")


def read_weights_file(path: Path) -> dict[str, Weight]:
    """Parse a JSON object ``entity -> weight``; decimals stay exact (``Decimal``)."""
    try:
        data = json.loads(
            path.read_text(encoding="utf-8"), parse_float=Decimal, parse_constant=_reject_constant
        )
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint="--weights") from exc
    if not isinstance(data, dict):
        raise click.BadParameter(f"{path}: expected a JSON object entity -> weight", param_hint="--weights")
    weights: dict[str, Weight] = {}
    for entity, weight in data.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, Decimal)):
            raise click.BadParameter(f"{path}: weight of {entity!r} is not a number", param_hint="--weights")
        if weight < 0:
            raise click.BadParameter(f"{path}: weight of {entity!r} is negative", param_hint="--weights")
        weights[entity] = weight
    return weights


def _fmt(value: Figure, digits: int) -> str:
    return f"{float(value):.{digits}f}"


def _pct(value: Figure) -> str:
    return f"{float(value) * 100:.2f} %"


def render_report(console: Console, report: ConcentrationReport, *, title: str, top: int) -> None:
    """Two rich tables: the figures, then the largest entities."""
    figures = Table(title=title, show_header=True)
    figures.add_column("metric")
    figures.add_column("value", justify="right")
    rows = [
        ("entities (with weight)", f"{report.entities} ({report.active_entities})"),
        ("total weight", _fmt(report.total, 4).rstrip("0").rstrip(".")),
        ("HHI (0-10000)", _fmt(report.hhi, 1)),
        (f"HHI band ({report.hhi_guideline} guidelines)", report.hhi_band),
        ("Nakamoto coefficient (> 50 %)", str(report.nakamoto)),
        ("Gini", _fmt(report.gini, 4)),
        ("Shannon entropy (bits)", f"{report.entropy_bits:.4f}"),
        ("effective entities 2^H", f"{report.effective_entities_entropy:.2f}"),
        ("effective entities 10000/HHI", _fmt(report.effective_entities_hhi, 2)),
        ("top-1 share", _pct(report.top1)),
        ("top-2 share", _pct(report.top2)),
        ("top-4 share", _pct(report.top4)),
        ("top-5 share", _pct(report.top5)),
    ]
    for name, value in rows:
        figures.add_row(name, value)
    console.print(figures)
    if report.is_empty or top <= 0:
        return
    ranking = Table(title=f"largest {min(top, len(report.ranking))} of {report.entities}")
    ranking.add_column("#", justify="right")
    ranking.add_column("entity")
    ranking.add_column("weight", justify="right")
    ranking.add_column("share", justify="right")
    for rank, (entity, weight) in enumerate(report.ranking[:top], start=1):
        ranking.add_row(
            str(rank), entity, _fmt(weight, 4).rstrip("0").rstrip("."), _pct(report.share(entity))
        )
    console.print(ranking)


def make_stats_group(providers: StatsProviders | None = None) -> click.Group:
    """Build the ``stats`` group with the given data sources wired in."""
    wired = providers or StatsProviders()

    @click.group("stats")
    def stats() -> None:
        """Hashrate-concentration statistics."""

    @stats.command("concentration")
    @click.option(
        "--weights",
        "weights_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="JSON object entity -> weight (blocks, difficulty...).",
    )
    @click.option("--network", is_flag=True, help="Blocks per pool over the network window.")
    @click.option("--pool", is_flag=True, help="Accepted difficulty per miner in our pool.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    @click.option(
        "--guideline",
        type=click.Choice(["1992", "2010", "2023"]),
        default="2010",
        show_default=True,
        help="DOJ/FTC merger-guidelines generation for the HHI label.",
    )
    @click.option(
        "--top",
        type=click.IntRange(min=0),
        default=10,
        show_default=True,
        help="Entities to list (table only).",
    )
    @click.pass_context
    def concentration(
        ctx: click.Context,
        weights_file: Path | None,
        network: bool,
        pool: bool,
        as_json: bool,
        guideline: Guideline,
        top: int,
    ) -> None:
        """HHI, Nakamoto coefficient, Gini, entropy and top-k shares."""
        chosen = [
            name
            for name, on in (
                ("--weights", weights_file is not None),
                ("--network", network),
                ("--pool", pool),
            )
            if on
        ]
        if len(chosen) > 1:
            raise click.UsageError(f"{' and '.join(chosen)} are alternatives; give one")
        source = "network" if network else "pool" if pool else None
        if weights_file is not None:
            weights: Mapping[str, Weight] = read_weights_file(weights_file)
            label = str(weights_file)
        elif source is not None:
            provider = wired.network if source == "network" else wired.pool
            if provider is None:
                raise click.UsageError(
                    f"no {source} data source is wired into this build; use --weights FILE.json"
                )
            weights = provider(ctx)
            label = f"{source} view"
        else:
            raise click.UsageError("nothing to measure: give --weights FILE.json, --network or --pool")
        try:
            report = concentration_report(weights, guideline=guideline)
        except (TypeError, ValueError) as exc:
            raise click.ClickException(f"{label}: {exc}") from exc
        if as_json:
            payload: dict[str, Any] = {"source": source or "weights", **report.to_dict()}
            click.echo(json.dumps(payload, indent=2, ensure_ascii=False))
            return
        render_report(Console(highlight=False), report, title=f"concentration: {label}", top=top)

    return stats


stats = make_stats_group()
"""The group with no providers wired; ``--weights`` works, ``--network``/``--pool`` explain why not."""
