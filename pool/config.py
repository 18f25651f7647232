"""Pool configuration: TOML in, validated settings out.

Validation happens once, at start-up, with pydantic, so a bad value is
refused with the field and the reason before a miner ever connects.
"""

from __future__ import annotations

import tomllib
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

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


class NodeSection(_Section):
    url: str = ""
    urls: list[str] = Field(default_factory=list)
    cookie_file: Path | None = None
    timeout: float = Field(10.0, gt=0)
    poll_interval: float = Field(0.5, gt=0)
    refresh_interval: float = Field(30.0, gt=0)

    def endpoints(self) -> list[str]:
        return [u for u in [self.url, *self.urls] if u]


class DevnetSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(18443, ge=0, le=65535)
    difficulty: Fraction = Fraction(1)
    synthetic_txs: int = Field(3, ge=0, le=500)
    rpc_user: str = ""
    rpc_password: str = ""

    @field_validator("difficulty", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Fraction:
        return _positive_fraction(v)


class StratumSection(_Section):
    host: str = "0.0.0.0"
    port: int = Field(3333, ge=0, le=65535)
    server_id: int = Field(0, ge=0, le=255)
    extranonce1_size: int = Field(4, ge=2, le=8)
    extranonce2_size: int = Field(4, ge=4, le=8)
    start_difficulty: Fraction | None = None
    min_difficulty: Fraction = Fraction(1, 100000)
    max_difficulty: Fraction | None = None
    target_share_interval: float = Field(10.0, gt=0)
    version_mask: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{8}$")] = "1fffe000"

    @field_validator("start_difficulty", "min_difficulty", "max_difficulty", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Fraction | None:
        return None if v is None else _positive_fraction(v)

    @model_validator(mode="after")
    def _bounds(self) -> "StratumSection":
        if self.max_difficulty is not None and self.max_difficulty < self.min_difficulty:
            raise ValueError("max_difficulty is below min_difficulty")
        return self


class DatabaseSection(_Section):
    url: str = ""
    batch_size: int = Field(500, ge=1)
    flush_interval: float = Field(0.05, gt=0)


class MetricsSection(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9333, ge=0, le=65535)


class Settings(_Section):
    pool: PoolSection = Field(default_factory=PoolSection)
    node: NodeSection = Field(default_factory=NodeSection)
    devnet: DevnetSection = Field(default_factory=DevnetSection)
    stratum: StratumSection = Field(default_factory=StratumSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    metrics: MetricsSection = Field(default_factory=MetricsSection)

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
