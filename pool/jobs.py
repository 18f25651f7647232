"""From block templates to Stratum jobs, and the tasks that keep them fresh.

Template fields the pool honours (BIP22/23/9/145, Bitcoin Core's GBT):

* ``rules``: a ``!``-prefixed rule the pool does not implement refuses the
  template (BIP9: such a rule changes what a valid block is).
* ``version`` / ``vbrequired``: the job version is the template's version
  with the ``vbrequired`` bits set (BIP9: "bit mask of versionbits the server
  requires set in submissions"). Required bits inside the version-rolling
  mask refuse the template, because miners could roll them away.
* ``mintime`` / ``curtime``: a share's ntime must lie in
  ``[mintime, curtime + 7200]`` (Core's time-too-old / time-too-new, with the
  template's clock); Stratum enforces it through ``StratumJob.ntime_min/max``.
* ``coinbasevalue``: the payout outputs must sum to it exactly.
* ``default_witness_commitment``: copied as the last coinbase output; the
  block then carries the 32-byte witness reserved value.
* ``coinbaseaux``: its values go into the scriptSig after the BIP34 height.
* ``sigoplimit`` / ``weightlimit`` / ``sizelimit``: the coinbase must fit in
  what bitcoind leaves for it (``DEFAULT_BLOCK_RESERVED_WEIGHT`` 8000 WU for
  header + count + coinbase, 400 sigop cost), and the whole block within the
  limits.
* ``longpollid``: kept on the job; the long-poll asks for the next template
  with it.
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

from stratum.jobs import StratumJob

from .bitcoin.block import ser_block, ser_header
from .bitcoin.coinbase import CoinbaseError, CoinbaseTemplate, build_coinbase
from .bitcoin.merkle import coinbase_branch, fold_branch
from .bitcoin.serialize import (
    display_to_internal,
    internal_to_display,
    ser_compact_size,
)
from .bitcoin.target import CompactTargetError, bits_to_target
from .bitcoin.tx import TxOut
from .node import ManagedNode, NodeError, NodePool, NodeUnavailable

log = logging.getLogger(__name__)

MAX_FUTURE_NTIME = 7200
UNDERSTOOD_RULES = {"segwit", "csv", "taproot", "signet", "testdummy"}
# Bitcoin Core node/types.h and rpc/mining.cpp: room GBT leaves for the pool.
DEFAULT_BLOCK_RESERVED_WEIGHT = 8000
COINBASE_MAX_SIGOP_COST = 400
WITNESS_SCALE_FACTOR = 4
HEADER_SIZE = 80
DEFAULT_VERSION_MASK = 0x1FFFE000
# Marker + flag + one stack item of 32 bytes (count byte, length byte, value).
_COINBASE_WITNESS_BYTES = 2 + 1 + 1 + 32


class TemplateError(ValueError):
    """A template the pool must not mine on."""


def notify_prevhash(internal: bytes) -> str:
    """Stratum's word-swapped prevhash: each 4-byte word of the internal bytes reversed."""
    return b"".join(internal[i : i + 4][::-1] for i in range(0, 32, 4)).hex()


def legacy_sigop_count(script: bytes) -> int:
    """Core's ``CScript::GetSigOpCount(false)``: multisig counts 20, a bad push ends the count.

    Local to the pool (pool.bitcoin has no script parser yet); the devnet
    has its own copy on purpose, as an independent check.
    """
    count = 0
    i = 0
    n = len(script)
    while i < n:
        op = script[i]
        i += 1
        if op <= 0x4E:
            if op < 0x4C:
                size = op
            else:
                width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
                if i + width > n:
                    break
                size = int.from_bytes(script[i : i + width], "little")
                i += width
            if i + size > n:
                break
            i += size
        elif op in (0xAC, 0xAD):
            count += 1
        elif op in (0xAE, 0xAF):
            count += 20
    return count


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
    longpollid: str | None = None
    source: str = ""  # the node the template came from

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


def job_version(template: dict[str, Any], version_mask: int = DEFAULT_VERSION_MASK) -> int:
    """The template version with the bits the node requires (``vbrequired``) set."""
    version = int(template["version"]) & 0xFFFFFFFF
    required = int(template.get("vbrequired", 0) or 0) & 0xFFFFFFFF
    if required & version_mask:
        raise TemplateError(
            f"template requires version bits {required & version_mask:08x} inside the version-rolling mask "
            f"{version_mask:08x}; miners could clear them"
        )
    return version | required


def coinbase_cost(coinbase: CoinbaseTemplate, tx_count: int) -> tuple[int, int, int]:
    """(weight of header + tx count + coinbase, scriptSig legacy sigops, coinbase size).

    Measured on the coinbase as submitted (witness form when committed),
    with an all-zero extranonce for the sigop count: the extranonce sits in
    the scriptSig as raw bytes, so what a miner rolls there is not counted.
    """
    plain = coinbase.assemble(b"\x00" * coinbase.extranonce_size)
    witness = _COINBASE_WITNESS_BYTES if coinbase.has_witness_commitment else 0
    size = len(plain) + witness
    fixed = HEADER_SIZE + len(ser_compact_size(tx_count + 1))
    weight = WITNESS_SCALE_FACTOR * (fixed + len(plain)) + witness
    script_sig_start = 4 + 1 + 36  # version, input count, prevout
    script_len = plain[script_sig_start]  # always a 1-byte length (scriptSig <= 100)
    script_sig = plain[script_sig_start + 1 : script_sig_start + 1 + script_len]
    return weight, legacy_sigop_count(script_sig), size


def check_limits(template: dict[str, Any], coinbase: CoinbaseTemplate, outputs: list[TxOut], witness_script: bytes | None) -> None:
    """Refuse a job whose block would break the template's limits or eat into the txs' room."""
    txs = template.get("transactions", [])
    weight, script_sigops, size = coinbase_cost(coinbase, len(txs))
    all_outputs = list(outputs) + ([TxOut(0, witness_script)] if witness_script else [])
    sigop_cost = WITNESS_SCALE_FACTOR * (script_sigops + sum(legacy_sigop_count(o.script_pubkey) for o in all_outputs))
    if weight > DEFAULT_BLOCK_RESERVED_WEIGHT:
        raise TemplateError(
            f"coinbase (with header) weighs {weight} WU, more than the {DEFAULT_BLOCK_RESERVED_WEIGHT} WU "
            "bitcoind reserves for it; use fewer or shorter payout outputs"
        )
    if sigop_cost > COINBASE_MAX_SIGOP_COST:
        raise TemplateError(
            f"coinbase sigop cost {sigop_cost} exceeds the {COINBASE_MAX_SIGOP_COST} bitcoind reserves for it; "
            "pay to P2WPKH/P2WSH/P2TR/P2SH rather than bare P2PKH/multisig outputs"
        )
    weightlimit = template.get("weightlimit")
    if weightlimit is not None:
        tx_weight = sum(int(t.get("weight", 0)) for t in txs)
        if weight + tx_weight > int(weightlimit):
            raise TemplateError(f"block would weigh {weight + tx_weight} WU, over weightlimit {weightlimit}")
    sigoplimit = template.get("sigoplimit")
    if sigoplimit is not None:
        tx_sigops = sum(int(t.get("sigops", 0)) for t in txs)
        if sigop_cost + tx_sigops > int(sigoplimit):
            raise TemplateError(f"block would have sigop cost {sigop_cost + tx_sigops}, over sigoplimit {sigoplimit}")
    sizelimit = template.get("sizelimit")
    if sizelimit is not None:
        total = HEADER_SIZE + len(ser_compact_size(len(txs) + 1)) + size + sum(len(t["data"]) // 2 for t in txs)
        if total > int(sizelimit):
            raise TemplateError(f"block would be {total} bytes, over sizelimit {sizelimit}")


def build_job(
    template: dict[str, Any],
    *,
    job_id: str,
    generation: int,
    payout_outputs: Callable[[int], list[TxOut]],
    tag: bytes,
    extranonce_size: int,
    clean_jobs: bool,
    version_mask: int = DEFAULT_VERSION_MASK,
    source: str = "",
) -> Job:
    """A job from a getblocktemplate result; ``payout_outputs(value)`` splits the coinbase value.

    Raises ``TemplateError`` (with the reason) for any template the pool
    must not mine on, so a bad template never reaches a miner.
    """
    try:
        check_rules(template)
        if "coinbasevalue" not in template:
            raise TemplateError("template has no coinbasevalue (coinbasetxn-only templates are not supported)")
        height = int(template["height"])
        value = int(template["coinbasevalue"])
        bits = int(template["bits"], 16)
        network_target = bits_to_target(bits)
        if "target" in template and int(template["target"], 16) != network_target:
            raise TemplateError(f"template target {template['target']} does not match bits {template['bits']}")
        curtime = int(template["curtime"])
        mintime = int(template.get("mintime", curtime))
        version = job_version(template, version_mask)
        outputs = payout_outputs(value)
        if sum(o.value for o in outputs) != value:
            raise TemplateError("payout outputs do not sum to coinbasevalue")
        commitment = template.get("default_witness_commitment")
        witness_script = bytes.fromhex(commitment) if commitment else None
        aux = b"".join(bytes.fromhex(v) for v in (template.get("coinbaseaux") or {}).values())
        coinbase = build_coinbase(
            height=height,
            outputs=outputs,
            extranonce_size=extranonce_size,
            tag=tag,
            aux=aux,
            witness_commitment_script=witness_script,
        )
        check_limits(template, coinbase, outputs, witness_script)
        txs = template.get("transactions", [])
        return Job(
            job_id=job_id,
            generation=generation,
            height=height,
            prevhash=display_to_internal(template["previousblockhash"]),
            version=version,
            bits=bits,
            # A node's clock may be behind its own median time past + 1.
            curtime=max(curtime, mintime),
            mintime=mintime,
            coinbase=coinbase,
            branch=tuple(coinbase_branch([display_to_internal(t["txid"]) for t in txs])),
            tx_data=tuple(bytes.fromhex(t["data"]) for t in txs),
            coinbase_value=value,
            network_target=network_target,
            clean_jobs=clean_jobs,
            longpollid=template.get("longpollid"),
            source=source,
        )
    except TemplateError:
        raise
    except CoinbaseError as exc:
        raise TemplateError(f"cannot build the coinbase: {exc}") from exc
    except CompactTargetError as exc:
        raise TemplateError(f"template bits: {exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise TemplateError(f"malformed template: {exc!r}") from exc


class JobManager:
    """Turns templates into jobs and hands them to ``on_job``.

    A new tip gives a job with ``clean_jobs=True`` at once; the template is
    also refreshed on a timer (new transactions) without clean_jobs, and
    when the template source changes (fail-over keeps the tip, so old jobs
    stay valid and no accepted share is lost).

    New tips are seen through ``NodePool`` (ZMQ ``hashblock`` or polling) and,
    when the source node has no ZMQ, through a long-poll ``getblocktemplate``.
    """

    def __init__(
        self,
        nodes: NodePool,
        *,
        payout_outputs: Callable[[int], list[TxOut]],
        tag: bytes,
        extranonce_size: int,
        on_job: Callable[[Job], None],
        refresh_interval: float = 30.0,
        longpoll: bool = True,
        longpoll_timeout: float = 120.0,
        keep_jobs: int = 64,
        version_mask: int = DEFAULT_VERSION_MASK,
        own_block_hold: float = 1.0,
    ) -> None:
        self.nodes = nodes
        self.payout_outputs = payout_outputs
        self.tag = tag
        self.extranonce_size = extranonce_size
        self.on_job = on_job
        self.refresh_interval = refresh_interval
        self.longpoll = longpoll
        self.longpoll_timeout = longpoll_timeout
        self.version_mask = version_mask
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.keep_jobs = keep_jobs
        self.current: Job | None = None
        self.source: ManagedNode | None = None
        self.generation = 0
        self._ids = itertools.count(1)
        self._lock = trio.Lock()
        self._next_timed = 0.0
        self._job_installed = trio.Event()
        self._longpoll_scope: trio.CancelScope | None = None
        self.own_block_hold = own_block_hold
        self._own_blocks = 0
        self._own_blocks_done = trio.Event()

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def wake(self) -> None:
        """Look at the nodes now (e.g. right after the pool found a block)."""
        self.nodes.poke_all()

    @contextmanager
    def own_block_in_flight(self) -> Iterator[None]:
        """Around the submission of a block this pool found.

        Work on the new tip waits (at most ``own_block_hold`` seconds) until
        the submission is done, so the block row and the winning share are
        recorded before any share on the next tip: round boundaries in the
        share log stay in order. Usually a few milliseconds.
        """
        self._own_blocks += 1
        try:
            yield
        finally:
            self._own_blocks -= 1
            if self._own_blocks == 0:
                self._own_blocks_done.set()
                self._own_blocks_done = trio.Event()

    async def _let_own_block_finish(self) -> None:
        if self._own_blocks:
            with trio.move_on_after(self.own_block_hold):
                await self._own_blocks_done.wait()

    async def refresh(self, *, force_clean: bool = False) -> Job:
        """Fetch a template (with fail-over) and install it as the current job."""
        async with self._lock:
            return await self._refresh_locked(force_clean=force_clean)

    async def _refresh_locked(self, *, force_clean: bool = False) -> Job:
        node, template = await self.nodes.getblocktemplate()
        job = self._install(template, node, force_clean=force_clean)
        assert job is not None
        return job

    def _install(self, template: dict[str, Any], node: ManagedNode, *, force_clean: bool = False, skip_same: bool = False) -> Job | None:
        """Build and announce a job; None when ``skip_same`` and nothing changed."""
        try:
            prev = display_to_internal(template["previousblockhash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise TemplateError(f"malformed template: previousblockhash ({exc!r})") from exc
        current = self.current
        if (
            skip_same
            and current is not None
            and node is self.source
            and prev == current.prevhash
            and template.get("longpollid") is not None
            and template.get("longpollid") == current.longpollid
        ):
            return None
        clean = force_clean or current is None or prev != current.prevhash
        generation = self.generation + 1 if clean else self.generation
        job = build_job(
            template,
            job_id=f"{next(self._ids):x}",
            generation=generation,
            payout_outputs=self.payout_outputs,
            tag=self.tag,
            extranonce_size=self.extranonce_size,
            clean_jobs=clean,
            version_mask=self.version_mask,
            source=node.name,
        )
        self.generation = generation
        self.jobs[job.job_id] = job
        while len(self.jobs) > self.keep_jobs:
            self.jobs.popitem(last=False)
        if node is not self.source:
            if self.source is not None:
                log.warning("templates now from %s (was %s)", node.name, self.source.name)
            if self._longpoll_scope is not None:
                self._longpoll_scope.cancel()
        self.current = job
        self.source = node
        self._next_timed = trio.current_time() + self.refresh_interval
        self._job_installed.set()
        self._job_installed = trio.Event()
        log.info("new job %s height %d clean=%s txs=%d from %s", job.job_id, job.height, clean, len(job.tx_data), node.name)
        self.on_job(job)
        return job

    async def run(self, *, task_status: trio.TaskStatus[Job] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.nodes.run)
            first = await self._first_job()
            nursery.start_soon(self._follow_tip)
            if self.longpoll:
                nursery.start_soon(self._longpoll_loop)
            task_status.started(first)

    async def _first_job(self) -> Job:
        delay = 0.2
        while True:
            try:
                return await self.refresh()
            except (NodeError, NodeUnavailable, TemplateError) as exc:
                log.warning("waiting for a usable template: %s", exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _follow_tip(self) -> None:
        """React to node changes (new tip, fail-over, fail-back) and the refresh timer."""
        seen = self.nodes.version
        while True:
            with trio.move_on_at(self._next_timed):
                seen = await self.nodes.wait_changed(seen)
            try:
                await self._maybe_refresh()
            except (NodeError, NodeUnavailable, TemplateError) as exc:
                log.warning("template update failed: %s", exc)
                self._next_timed = trio.current_time() + min(self.refresh_interval, max(self.nodes.poll_interval, 1.0))

    async def _maybe_refresh(self) -> None:
        # Decided under the lock: the long-poll may have installed this tip meanwhile.
        async with self._lock:
            assert self.current is not None
            preferred = self.nodes.preferred()
            timer_due = trio.current_time() >= self._next_timed
            if preferred is None:
                if timer_due:
                    await self._refresh_locked()  # every node looks down; try them all in order
                return
            new_tip = display_to_internal(preferred.state.best_hash) != self.current.prevhash
            if new_tip:
                await self._let_own_block_finish()
            if new_tip or preferred is not self.source or timer_due:
                await self._refresh_locked()

    async def _longpoll_loop(self) -> None:
        """bitcoind's long-poll: ask with the current longpollid; the answer means "changed".

        The answer is used as the signal and the job is built from a normal
        ``getblocktemplate`` (served from bitcoind's template cache right
        after a long-poll), so every job comes through one path: fail-over
        order, template-fetch metrics and de-duplication alike. Only for a
        source node without ZMQ (ZMQ reports its tips sooner). A failed or
        timed-out long-poll is simply asked again; the health monitors decide
        about fail-over.
        """
        while True:
            job, source = self.current, self.source
            if job is None or source is None or not job.longpollid or source.zmq_hashblock:
                await self._job_installed.wait()
                continue
            answer = None
            with trio.CancelScope() as scope:
                self._longpoll_scope = scope
                try:
                    answer = await source.client.longpoll_template(job.longpollid, timeout=self.longpoll_timeout)
                except (NodeError, NodeUnavailable) as exc:
                    log.debug("long-poll on %s ended: %s", source.name, exc)
                    with trio.move_on_after(max(self.nodes.poll_interval, 0.5)):
                        await self._job_installed.wait()
            self._longpoll_scope = None
            if answer is None:
                continue
            if isinstance(answer.get("previousblockhash"), str):
                self.nodes.note_tip(answer["previousblockhash"])
            if answer.get("longpollid") == job.longpollid:
                # The node answered without anything new (its own timeout); do not spin.
                with trio.move_on_after(max(self.nodes.poll_interval, 0.5)):
                    await self._job_installed.wait()
                continue
            try:
                await self._refresh_after_longpoll(answer, source)
            except (NodeError, NodeUnavailable, TemplateError) as exc:
                log.warning("template update after long-poll failed: %s", exc)

    async def _refresh_after_longpoll(self, answer: dict[str, Any], source: ManagedNode) -> None:
        height = answer.get("height")
        async with self._lock:
            current = self.current
            if (
                current is None
                or source is not self.source  # fail-over meanwhile
                or answer.get("longpollid") == current.longpollid  # another path got there first
                or (isinstance(height, int) and height < current.height)  # overtaken by a newer tip
            ):
                return
            if answer.get("previousblockhash") != internal_to_display(current.prevhash):
                await self._let_own_block_finish()
            node, template = await self.nodes.getblocktemplate()
            self._install(template, node, skip_same=True)


__all__ = [
    "Job",
    "JobManager",
    "TemplateError",
    "build_job",
    "check_limits",
    "internal_to_display",
    "job_version",
    "legacy_sigop_count",
    "notify_prevhash",
]
