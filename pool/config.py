"""Pool configuration: TOML in, validated settings out.

Validation happens once, at start-up, with pydantic, so a bad value is
refused with the field and the reason before a miner ever connects.
"""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from stratum.bans import AbuseSettings, parse_networks
from stratum.limits import Limits
from stratum.server import ProxyProtocolSettings
from stratum.tls import TlsSettings

from .bitcoin.coinbase import MAX_SCRIPT_SIG
from .bitcoin.script import AddressError, address_to_script, bip34_height_push

Network = Literal["mainnet", "testnet", "testnet4", "signet", "regtest"]

# A regtest address (BIP173 test vector, witness v0 keyhash) used only when
# the pool runs on its embedded devnet and no address was configured.
DEVNET_POOL_ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolSection(_Section):
    network: Network = "regtest"
    address: str = DEVNET_POOL_ADDRESS
    tag: str = "/stope/"
    data_dir: Path = Path(".stope")

    @field_validator("tag")
    @classmethod
    def _tag_ascii(cls, v: str) -> str:
        if not v.isascii() or not v.isprintable():
            raise ValueError("tag must be printable ASCII")
        return v


def _check_rpc_url(v: str) -> str:
    parts = urlsplit(v)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{redact_url(v)!r} is not an http(s)://host:port/ JSON-RPC URL")
    try:
        parts.port
    except ValueError as exc:
        raise ValueError(f"{redact_url(v)!r}: {exc}") from exc
    return v


def _check_zmq_endpoint(v: str) -> str:
    if v and not v.startswith(("tcp://", "ipc://")):
        raise ValueError(f"{v!r} is not a ZMQ endpoint (tcp://host:port or ipc://path)")
    return v


def redact_url(url: str) -> str:
    """A URL without its credentials, for error messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class NodeEndpoint(_Section):
    """One bitcoind: JSON-RPC URL, its cookie file, its ``-zmqpubhashblock`` endpoint."""

    url: str
    cookie_file: Path | None = None
    zmq_hashblock: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_rpc_url(v)

    @field_validator("zmq_hashblock")
    @classmethod
    def _zmq(cls, v: str) -> str:
        return _check_zmq_endpoint(v)


class NodeSection(_Section):
    url: str = ""
    urls: list[str | NodeEndpoint] = Field(default_factory=list)
    cookie_file: Path | None = None
    zmq_hashblock: str = ""
    timeout: float = Field(10.0, gt=0)
    poll_interval: float = Field(0.5, gt=0)
    refresh_interval: float = Field(30.0, gt=0)
    longpoll: bool = True
    longpoll_timeout: float = Field(120.0, gt=0)
    failover_holdoff: float = Field(5.0, ge=0)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_rpc_url(v) if v else v

    @field_validator("urls")
    @classmethod
    def _urls(cls, v: list[str | NodeEndpoint]) -> list[str | NodeEndpoint]:
        for item in v:
            if isinstance(item, str):
                _check_rpc_url(item)
        return v

    @field_validator("zmq_hashblock")
    @classmethod
    def _zmq(cls, v: str) -> str:
        return _check_zmq_endpoint(v)

    def endpoints(self) -> list[str]:
        """The JSON-RPC URLs, in order of preference."""
        return [ep.url for ep in self.node_endpoints()]

    def node_endpoints(self) -> list[NodeEndpoint]:
        """Every node in order of preference; ``cookie_file`` and ``zmq_hashblock`` of the
        section apply to ``url`` (and the cookie to plain-string ``urls`` entries too)."""
        out = []
        if self.url:
            out.append(NodeEndpoint(url=self.url, cookie_file=self.cookie_file, zmq_hashblock=self.zmq_hashblock))
        for item in self.urls:
            if isinstance(item, str):
                out.append(NodeEndpoint(url=item, cookie_file=self.cookie_file))
            else:
                out.append(item if item.cookie_file else item.model_copy(update={"cookie_file": self.cookie_file}))
        return out


class DevnetSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(18443, ge=0, le=65535)
    difficulty: Fraction = Fraction(1)
    synthetic_txs: int = Field(3, ge=0, le=500)
    rpc_user: str = ""
    rpc_password: str = ""
    zmq_hashblock: str = ""
    longpoll_timeout: float = Field(30.0, gt=0)

    @field_validator("zmq_hashblock")
    @classmethod
    def _zmq(cls, v: str) -> str:
        return _check_zmq_endpoint(v)

    @field_validator("difficulty", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Fraction:
        return _positive_fraction(v)


class StratumLimitsSection(_Section):
    """``[stratum.limits]``: bounds on what one client can make the server spend (stratum.limits)."""

    # A longer line closes the connection.
    max_line_bytes: int = Field(16384, ge=256, le=1 << 20)
    # Beyond this rate (after a burst) the server stops reading the connection for a while.
    max_messages_per_second: float = Field(50.0, gt=0)
    message_burst: int = Field(100, ge=1)
    # Shares of one connection awaiting a verdict; reading pauses beyond it.
    max_pending_requests: int = Field(64, ge=1)
    # 0 = unlimited.
    max_connections: int = Field(10000, ge=0)
    max_connections_per_ip: int = Field(256, ge=0)
    # PROXY header, TLS, subscribe and authorize must all be done within this.
    handshake_timeout: float = Field(30.0, gt=0)
    # A working miner sending no complete line for this long is closed.
    idle_timeout: float = Field(900.0, gt=0)
    # Bytes waiting for a socket whose kernel buffer is full; beyond it the miner is dropped.
    max_send_buffer: int = Field(262144, ge=1024)
    # SO_SNDBUF of miner sockets; 0 = the kernel's autotuning.
    socket_send_buffer: int = Field(0, ge=0)
    flush_timeout: float = Field(2.0, gt=0)

    def limits(self) -> Limits:
        return Limits(
            max_line=self.max_line_bytes,
            max_messages_per_second=self.max_messages_per_second,
            message_burst=self.message_burst,
            max_pending_requests=self.max_pending_requests,
            max_connections=self.max_connections,
            max_connections_per_ip=self.max_connections_per_ip,
            handshake_timeout=self.handshake_timeout,
            idle_timeout=self.idle_timeout,
            max_send_buffer=self.max_send_buffer,
            socket_send_buffer=self.socket_send_buffer or None,
            flush_timeout=self.flush_timeout,
        )


def _check_networks(v: list[str]) -> list[str]:
    parse_networks(v)
    return v


class StratumAbuseSection(_Section):
    """``[stratum.abuse]``: bans, authorization back-off, allow/deny lists (stratum.bans)."""

    # Seconds a ban lasts; 0 = never ban.
    ban_duration: float = Field(600.0, ge=0)
    # Ban once recent invalid shares are at least this many and this fraction of recent shares.
    ban_invalid_ratio: float = Field(0.9, gt=0, le=1)
    ban_min_invalid: int = Field(50, ge=1)
    # Ban after this much recent junk (undecodable line 1, over-long line 8, handshake timeout 1).
    ban_junk: int = Field(64, ge=1)
    # "Recent": counts halve every half_life seconds.
    half_life: float = Field(600.0, gt=0)
    # Refused authorizations are answered after base * 2^(recent failures - 1) seconds, at most max.
    auth_backoff_base: float = Field(0.5, ge=0)
    auth_backoff_max: float = Field(16.0, ge=0)
    # Networks (CIDR): allow non-empty = only these may connect; deny = never;
    # exempt = never banned and no per-address connection cap.
    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    exempt: list[str] = Field(default_factory=list)

    @field_validator("allow", "deny", "exempt")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return _check_networks(v)

    @model_validator(mode="after")
    def _backoff(self) -> "StratumAbuseSection":
        if self.auth_backoff_max < self.auth_backoff_base:
            raise ValueError("auth_backoff_max is below auth_backoff_base")
        return self

    def settings(self) -> AbuseSettings:
        return AbuseSettings(
            ban_duration=self.ban_duration,
            ban_invalid_ratio=self.ban_invalid_ratio,
            ban_min_invalid=self.ban_min_invalid,
            ban_junk=self.ban_junk,
            half_life=self.half_life,
            auth_backoff_base=self.auth_backoff_base,
            auth_backoff_max=self.auth_backoff_max,
            allow=tuple(self.allow),
            deny=tuple(self.deny),
            exempt=tuple(self.exempt),
        )


class StratumProxySection(_Section):
    """``[stratum.proxy_protocol]``: PROXY v1/v2 from load balancers at these addresses only."""

    trusted: list[str] = Field(default_factory=list)

    @field_validator("trusted")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return _check_networks(v)


class StratumTlsSection(_Section):
    """``[stratum.tls]``: the optional stratum+ssl port."""

    enabled: bool = False
    host: str | None = None
    port: int = Field(3334, ge=0, le=65535)
    cert_file: Path | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _files(self) -> "StratumTlsSection":
        if not self.enabled:
            return self
        for name in ("cert_file", "key_file"):
            path = getattr(self, name)
            if path is None:
                raise ValueError(f"{name} is required when TLS is enabled")
            if not Path(path).is_file():
                raise ValueError(f"{name}: {path} is not a file")
        return self

    def settings(self) -> TlsSettings | None:
        if not self.enabled:
            return None
        assert self.cert_file is not None and self.key_file is not None
        return TlsSettings(cert_file=self.cert_file, key_file=self.key_file, port=self.port, host=self.host)


class StratumShutdownSection(_Section):
    """``[stratum.shutdown]``: what SIGTERM does (stop accepting, client.reconnect, flush shares)."""

    # Seconds miners get to leave by themselves after client.reconnect.
    grace: float = Field(5.0, ge=0)
    # Further seconds for shares in flight and the database flush; the spool keeps anything later.
    timeout: float = Field(20.0, gt=0)


class StratumFaultsSection(_Section):
    """``[stratum.faults]``: how long miners keep working on a tip no node confirms."""

    # Seconds without any node confirming the current tip (node down, slow or
    # erroring) before shares stop being credited; 0 = never.
    max_work_age: float = Field(120.0, ge=0)
    # Tell working miners (client.show_message) when that starts and ends.
    notify_miners: bool = True


class StratumSection(_Section):
    host: str = "0.0.0.0"
    port: int = Field(3333, ge=0, le=65535)
    server_id: int = Field(0, ge=0, le=255)
    # Stratum worker processes on the one port (SO_REUSEPORT); worker i uses
    # server_id + i as its extranonce1 prefix (`stope run --workers N` overrides).
    workers: int = Field(1, ge=1, le=256)
    extranonce1_size: int = Field(4, ge=2, le=8)
    extranonce2_size: int = Field(4, ge=4, le=8)
    start_difficulty: Fraction | None = None
    min_difficulty: Fraction = Fraction(1, 100000)
    max_difficulty: Fraction | None = None
    target_share_interval: float = Field(10.0, gt=0)
    max_share_rate: float = Field(1.0, gt=0)
    resume_window: float = Field(300.0, ge=0)
    version_mask: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8}$")] = "1fffe000"
    limits: StratumLimitsSection = Field(default_factory=StratumLimitsSection)
    abuse: StratumAbuseSection = Field(default_factory=StratumAbuseSection)
    proxy_protocol: StratumProxySection = Field(default_factory=StratumProxySection)
    tls: StratumTlsSection = Field(default_factory=StratumTlsSection)
    shutdown: StratumShutdownSection = Field(default_factory=StratumShutdownSection)
    faults: StratumFaultsSection = Field(default_factory=StratumFaultsSection)

    def hardening(self) -> dict[str, Any]:
        """Keyword arguments of ``stratum.server.ServerSettings`` for the hardening options."""
        return {
            "limits": self.limits.limits(),
            "abuse": self.abuse.settings(),
            "proxy": ProxyProtocolSettings(trusted=tuple(self.proxy_protocol.trusted)),
            "tls": self.tls.settings(),
        }

    @field_validator("start_difficulty", "min_difficulty", "max_difficulty", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Fraction | None:
        return None if v is None else _positive_fraction(v)

    @model_validator(mode="after")
    def _bounds(self) -> "StratumSection":
        if self.max_difficulty is not None and self.max_difficulty < self.min_difficulty:
            raise ValueError("max_difficulty is below min_difficulty")
        if self.server_id + self.workers - 1 > 255:
            raise ValueError("server_id + workers - 1 must be at most 255 (one extranonce1 prefix byte per worker)")
        if self.max_share_rate * self.target_share_interval < 2:
            raise ValueError("max_share_rate must allow at least twice the target share rate (1/target_share_interval)")
        return self


class DatabaseSection(_Section):
    url: str = ""
    batch_size: int = Field(20000, ge=1)
    flush_interval: float = Field(0.05, gt=0)
    # Share records held in memory for the database; beyond it they stay on disk only.
    queue_size: int = Field(100_000, ge=1)
    # Write-ahead spool: every accepted share is fsynced here before the miner hears `true`.
    spool_dir: Path | None = None
    spool_max_bytes: int = Field(1 << 30, ge=1 << 20)
    fsync_interval: float = Field(0.002, ge=0, le=1)
    segment_bytes: int = Field(8 << 20, ge=4096)
    segment_age: float = Field(2.0, gt=0)

    def spool_path(self, data_dir: Path) -> Path:
        """The spool directory: ``spool_dir``, or ``spool`` under the pool's data_dir."""
        return self.spool_dir if self.spool_dir is not None else data_dir / "spool"


class CheckerSection(_Section):
    # "numba": the compiled lane kernel; "scalar": the hashlib reference (bit-identical).
    backend: Literal["numba", "scalar"] = "numba"
    threads: int = Field(1, ge=1, le=64)
    batch_size: int = Field(1024, ge=1, le=65536)
    batch_deadline_ms: float = Field(2.0, ge=0, le=1000)


class MetricsSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9333, ge=0, le=65535)
    # Seconds between recomputing the hashrate / concentration gauges (not per share).
    update_interval: float = Field(5.0, gt=0)
    # Label-cardinality caps: beyond them workers roll up per miner (worker="_other")
    # and miners into miner="_other".
    max_worker_series: int = Field(500, ge=0)
    max_miner_series: int = Field(500, ge=0)
    # Seconds between getblockchaininfo polls for the node-behind figures.
    node_status_interval: float = Field(15.0, gt=0)


class ConcentrationSection(_Section):
    # In-pool view: accepted difficulty per miner over this many seconds.
    pool_window: float = Field(86400.0, gt=0)
    # Warn (log + metric) when one miner has more than this share of the pool.
    pool_max_share: float = Field(0.3, gt=0, le=1)
    # Network view: mempool pools-v2.json identification file; None = network view off.
    pools_file: Path | None = None
    # Blocks in the network window (1008 = about a week).
    network_window: int = Field(1008, ge=1)
    # Alert threshold for the largest pool's share of the network window.
    network_max_share: float = Field(0.4, gt=0, le=1)
    # Unattributed blocks: each its own entity, all as one, or left out.
    unknown_policy: Literal["each", "one", "exclude"] = "each"
    # DOJ/FTC merger-guidelines generation used for the HHI band labels.
    guideline: Literal["1992", "2010", "2023"] = "2010"

    @field_validator("pools_file")
    @classmethod
    def _pools_file_exists(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"{v} is not a file")
        return v


class PayoutsSection(_Section):
    """``[payouts]``: how found blocks become miners' balances and how balances are paid.

    Read by ``stope payouts run`` / ``explain`` (``payouts.batch``); the pool
    itself only records shares and blocks.
    """

    # pplns (default), prop, solo (custodial: the finder is credited), pps, fpps.
    scheme: Literal["pplns", "prop", "solo", "pps", "fpps"] = "pplns"
    # Pool fee in basis points (200 = 2 %), floored, on the block value (or the PPS price).
    fee_bps: int = Field(200, ge=0, le=10000)
    # Transaction fees shared with miners (the fee base is the whole coinbase value).
    share_tx_fees: bool = True
    # PPLNS window X in multiples of network difficulty; what an unfilled window does.
    window_factor: Fraction = Fraction(2)
    unfilled: Literal["keep", "normalize"] = "keep"
    # PROP weighs shares by difficulty (classic) or by score d/D (miningcore).
    prop_weight: Literal["difficulty", "score"] = "difficulty"
    # FPPS: expected transaction fees per block (satoshis) added to the subsidy.
    fpps_expected_fees: int = Field(0, ge=0)
    # Confirmations before a found block's credits become payable (Core: 101).
    maturity: int = Field(101, ge=1)
    # Least balance paid (satoshis); never below the recipient script's dust limit.
    minimum_payout: int = Field(1_000_000, ge=0)
    # Most recipients in one payout transaction; the rest wait for the next run.
    max_recipients: int = Field(500, ge=1)
    # "sendmany": the node's wallet pays; "csv": a file for an operator to sign.
    method: Literal["sendmany", "csv"] = "sendmany"
    # Where "csv" batches are written (unset = <pool.data_dir>/payouts).
    export_dir: Path | None = None
    # Wallet JSON-RPC URL (e.g. ".../wallet/pool"); empty = the first [node] URL (or the devnet).
    wallet_url: str = ""
    # Miners pay the payout transaction's fee, split equally (sendmany subtractfeefrom).
    miners_pay_tx_fee: bool = False
    # PPS reserve metric: the ruin probability the reserve is sized for.
    ruin_probability: Fraction = Fraction(1, 1000)

    @field_validator("window_factor", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Fraction:
        return _positive_fraction(v)

    @field_validator("ruin_probability", mode="before")
    @classmethod
    def _probability(cls, v: Any) -> Fraction:
        f = _positive_fraction(v)
        if f >= 1:
            raise ValueError("must be below 1")
        return f

    @field_validator("wallet_url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _check_rpc_url(v) if v else v

    def export_path(self, data_dir: Path) -> Path:
        """Where CSV batches go: ``export_dir``, or ``payouts`` under the pool's data_dir."""
        return self.export_dir if self.export_dir is not None else data_dir / "payouts"


class Settings(_Section):
    pool: PoolSection = Field(default_factory=PoolSection)
    node: NodeSection = Field(default_factory=NodeSection)
    devnet: DevnetSection = Field(default_factory=DevnetSection)
    stratum: StratumSection = Field(default_factory=StratumSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    checker: CheckerSection = Field(default_factory=CheckerSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)
    concentration: ConcentrationSection = Field(default_factory=ConcentrationSection)
    payouts: PayoutsSection = Field(default_factory=PayoutsSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Settings":
        try:
            address_to_script(self.pool.address, self.pool.network)
        except AddressError as exc:
            raise ValueError(f"pool.address: {exc}") from exc
        # The scriptSig holds height push + tag + extranonce; refuse a tag that
        # could push it past 100 bytes at any plausible height (5-byte push).
        worst = len(bip34_height_push(2**31 - 1)) + len(self.pool.tag.encode())
        worst += self.stratum.extranonce1_size + self.stratum.extranonce2_size
        if worst > MAX_SCRIPT_SIG:
            raise ValueError(
                f"pool.tag: {len(self.pool.tag)} characters leave a coinbase scriptSig of up to "
                f"{worst} bytes; the limit is {MAX_SCRIPT_SIG}"
            )
        if self.uses_devnet and self.pool.network != "regtest":
            raise ValueError("pool.network: the embedded devnet is a regtest chain; set network = \"regtest\" or configure [node] url")
        return self

    @property
    def uses_devnet(self) -> bool:
        return not self.node.endpoints()

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.pool.data_dir / 'stope.sqlite3').as_posix()}"

    def effective_start_difficulty(self) -> Fraction:
        if self.stratum.start_difficulty is not None:
            return self.stratum.start_difficulty
        # Devnet: low enough that a pure-Python miner gets a share about every second.
        return Fraction(1, 10000) if self.uses_devnet else Fraction(1024)


def _positive_fraction(v: Any) -> Fraction:
    if isinstance(v, bool):
        raise ValueError("must be a number")
    try:
        f = Fraction(str(v)) if isinstance(v, float) else Fraction(v)
    except (TypeError, ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"not a number: {v!r}") from exc
    if f <= 0:
        raise ValueError("must be positive")
    return f


def _format_error(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)


def settings_from_mapping(data: dict[str, Any]) -> Settings:
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from exc


def load_settings(path: Path | None, overrides: dict[str, dict[str, Any]] | None = None) -> Settings:
    """Read a TOML file (or nothing: the embedded defaults) and validate it."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"config file {path} does not exist") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return settings_from_mapping(data)
