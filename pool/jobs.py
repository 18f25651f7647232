"""From block templates to Stratum jobs, and the task that keeps them fresh."""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from stratum.jobs import StratumJob

from .bitcoin.block import ser_block, ser_header
from .bitcoin.coinbase import CoinbaseTemplate, build_coinbase
from .bitcoin.merkle import coinbase_branch, fold_branch
from .bitcoin.serialize import display_to_internal, internal_to_display
from .bitcoin.target import bits_to_target
from .bitcoin.tx import TxOut
from .node import NodeClient, NodeError, NodeUnavailable

log = logging.getLogger(__name__)

MAX_FUTURE_NTIME = 7200
UNDERSTOOD_RULES = {"segwit", "csv", "taproot", "signet", "testdummy"}


class TemplateError(ValueError):
    """A template the pool must not mine on."""


def notify_prevhash(internal: bytes) -> str:
    """Stratum's word-swapped prevhash: each 4-byte word of the internal bytes reversed."""
    return b"".join(internal[i : i + 4][::-1] for i in range(0, 32, 4)).hex()


@dataclass(frozen=True)
class Job:
    job_id: str
    generation: int
    height: int
    prevhash: bytes  # internal order
    version: int
    bits: int
    curtime: int
    mintime: int
    coinbase: CoinbaseTemplate
    branch: tuple[bytes, ...]
    tx_data: tuple[bytes, ...]
    coinbase_value: int
    network_target: int
    clean_jobs: bool

    def stratum_job(self) -> StratumJob:
        return StratumJob(
            job_id=self.job_id,
            prevhash=notify_prevhash(self.prevhash),
            coinb1=self.coinbase.coinb1.hex(),
            coinb2=self.coinbase.coinb2.hex(),
            merkle_branch=tuple(b.hex() for b in self.branch),
            version=self.version,
            nbits=self.bits,
            ntime=self.curtime,
            clean_jobs=self.clean_jobs,
            generation=self.generation,
            ntime_min=self.mintime,
            ntime_max=self.curtime + MAX_FUTURE_NTIME,
        )

    def header(self, extranonce: bytes, ntime: int, nonce: int, version: int) -> bytes:
        root = fold_branch(self.coinbase.txid(extranonce), self.branch)
        return ser_header(version, self.prevhash, root, ntime, self.bits, nonce)

    def block(self, extranonce: bytes, ntime: int, nonce: int, version: int) -> bytes:
        """The full block for submitblock (witness coinbase when committed)."""
        header = self.header(extranonce, ntime, nonce, version)
        return ser_block(header, [self.coinbase.assemble_for_block(extranonce), *self.tx_data])


def check_rules(template: dict[str, Any]) -> None:
    for rule in template.get("rules", []):
        if rule.startswith("!") and rule[1:] not in UNDERSTOOD_RULES:
            raise TemplateError(f"template requires rule {rule[1:]!r}, which this pool does not implement")


def build_job(
    template: dict[str, Any],
    *,
    job_id: str,
    generation: int,
    payout_outputs: Callable[[int], list[TxOut]],
    tag: bytes,
    extranonce_size: int,
    clean_jobs: bool,
) -> Job:
    """A job from a getblocktemplate result; ``payout_outputs(value)`` splits the coinbase value."""
    check_rules(template)
    height = int(template["height"])
    value = int(template["coinbasevalue"])
    outputs = payout_outputs(value)
    if sum(o.value for o in outputs) != value:
        raise TemplateError("payout outputs do not sum to coinbasevalue")
    commitment = template.get("default_witness_commitment")
    aux = b"".join(bytes.fromhex(v) for v in (template.get("coinbaseaux") or {}).values())
    coinbase = build_coinbase(
        height=height,
        outputs=outputs,
        extranonce_size=extranonce_size,
        tag=tag,
        aux=aux,
        witness_commitment_script=bytes.fromhex(commitment) if commitment else None,
    )
    txs = template.get("transactions", [])
    bits = int(template["bits"], 16)
    return Job(
        job_id=job_id,
        generation=generation,
        height=height,
        prevhash=display_to_internal(template["previousblockhash"]),
        version=int(template["version"]),
        bits=bits,
        curtime=int(template["curtime"]),
        mintime=int(template.get("mintime", template["curtime"])),
        coinbase=coinbase,
        branch=tuple(coinbase_branch([display_to_internal(t["txid"]) for t in txs])),
        tx_data=tuple(bytes.fromhex(t["data"]) for t in txs),
        coinbase_value=value,
        network_target=bits_to_target(bits),
        clean_jobs=clean_jobs,
    )


class JobManager:
    """Polls the node, turns templates into jobs and hands them to ``on_job``.

    A new tip gives a job with ``clean_jobs=True`` at once; otherwise the
    template is refreshed on a timer (new transactions) without clean_jobs.
    """

    def __init__(
        self,
        node: NodeClient,
        *,
        payout_outputs: Callable[[int], list[TxOut]],
        tag: bytes,
        extranonce_size: int,
        on_job: Callable[[Job], None],
        poll_interval: float = 0.5,
        refresh_interval: float = 30.0,
        keep_jobs: int = 64,
    ) -> None:
        self.node = node
        self.payout_outputs = payout_outputs
        self.tag = tag
        self.extranonce_size = extranonce_size
        self.on_job = on_job
        self.poll_interval = poll_interval
        self.refresh_interval = refresh_interval
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.keep_jobs = keep_jobs
        self.current: Job | None = None
        self.generation = 0
        self._ids = itertools.count(1)
        self._wake = trio.Event()
        self._last_refresh = -1e9

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def wake(self) -> None:
        """Poll now (e.g. right after the pool found a block)."""
        self._wake.set()

    async def refresh(self, *, force_clean: bool = False) -> Job:
        template = await self.node.getblocktemplate()
        prev = display_to_internal(template["previousblockhash"])
        clean = force_clean or self.current is None or prev != self.current.prevhash
        if clean:
            self.generation += 1
        job = build_job(
            template,
            job_id=f"{next(self._ids):x}",
            generation=self.generation,
            payout_outputs=self.payout_outputs,
            tag=self.tag,
            extranonce_size=self.extranonce_size,
            clean_jobs=clean,
        )
        self.jobs[job.job_id] = job
        while len(self.jobs) > self.keep_jobs:
            self.jobs.popitem(last=False)
        self.current = job
        self._last_refresh = trio.current_time()
        log.info("new job %s height %d clean=%s txs=%d", job.job_id, job.height, clean, len(job.tx_data))
        self.on_job(job)
        return job

    async def run(self, *, task_status: trio.TaskStatus[Job] = trio.TASK_STATUS_IGNORED) -> None:
        first = await self._first_job()
        task_status.started(first)
        while True:
            with trio.move_on_after(self.poll_interval):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                best = await self.node.getbestblockhash()
                assert self.current is not None
                if display_to_internal(best) != self.current.prevhash:
                    await self.refresh()
                elif trio.current_time() - self._last_refresh >= self.refresh_interval:
                    await self.refresh()
            except (NodeError, NodeUnavailable, TemplateError) as exc:
                log.warning("template update failed: %s", exc)

    async def _first_job(self) -> Job:
        delay = 0.2
        while True:
            try:
                return await self.refresh()
            except (NodeError, NodeUnavailable, TemplateError) as exc:
                log.warning("waiting for the node (%s): %s", self.node.name, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)


__all__ = ["Job", "JobManager", "TemplateError", "build_job", "notify_prevhash", "internal_to_display"]
